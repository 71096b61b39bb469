"""An HTTP server on 127.0.0.1 for download tests: nothing leaves the machine,
and it stops by itself after a while even if a test hangs."""
import contextlib
import http.server
import threading

SERVER_LIFETIME_SECONDS = 60


@contextlib.contextmanager
def serving(handler):
    """Yield the base URL of a threaded server running ``handler`` on a free port."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    deadline = threading.Timer(SERVER_LIFETIME_SECONDS, httpd.shutdown)
    deadline.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        deadline.cancel()
        httpd.shutdown()
        httpd.server_close()
