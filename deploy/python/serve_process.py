"""serve.py as a child process that dies with its parent, for the service's
benchmark (benchmark_serve.py) and tests (tests/test_serve.py)."""
import http.client
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

from child_process import die_with_parent

SERVE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "serve.py")


class ServeProcess:
    """Starts ``serve.py --port 0 ARGV`` and waits until it is ready (``start_timeout_s``);
    its port is read from its first line, its stderr kept in a file for errors."""

    def __init__(self, argv, start_timeout_s=300):
        self.log = tempfile.TemporaryFile("w+")
        parent = os.getpid()
        self.process = subprocess.Popen([sys.executable, SERVE, "--port", "0", *argv], stdout=subprocess.PIPE,
                                        stderr=self.log, text=True, preexec_fn=lambda: die_with_parent(parent))
        self.lines = queue.Queue()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        deadline = time.monotonic() + start_timeout_s
        self.port = int(re.search(r":(\d+)$", self._line("listening on", deadline)).group(1))
        self._line("ready", deadline)

    def _read_stdout(self):
        for line in self.process.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def _line(self, prefix, deadline):
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                break
            if line.startswith(prefix):
                return line
        self.process.kill()
        raise RuntimeError(f"serve.py did not print '{prefix}':\n{self.stderr()[-3000:]}")

    def stderr(self):
        self.log.seek(0)
        return self.log.read()

    def request(self, method, path, body=None, timeout=60):
        """-> (status, headers with lower-case names, body bytes) over a fresh connection."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body)
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            connection.close()

    def metrics(self):
        """{'name{labels}': value} from GET /metrics."""
        status, _, text = self.request("GET", "/metrics")
        if status != 200:
            raise RuntimeError(f"GET /metrics answered {status}")
        values = {}
        for line in text.decode().splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        return values

    def terminate(self, timeout_s=60):
        """SIGTERM -> the exit status (killed if it has not exited in ``timeout_s``)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        finally:
            self.kill()

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
