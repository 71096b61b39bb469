"""One HTTP transfer into an open file: redirects followed (urllib), a
progress bar, a byte limit, an early end detected, and bodies that are not
the file recognised: a Git LFS pointer (a host serving the repository's
pointer instead of the LFS content) is an error, and an HTML page is handed
back for the caller to read (Google Drive's confirmation page) or refuse."""
import http.client
import http.cookiejar
import urllib.error
import urllib.request

from ..core.download import progress_bar
from .registry import ZooError

LFS_POINTER_START = b"version https://git-lfs.github.com/spec/"
_CHUNK = 1 << 20
_SNIFF = 512
_MAX_PAGE = 1 << 20  # an HTML page bigger than this is not a confirmation page
USER_AGENT = "ppfacedet-zoo"


class HtmlPage(Exception):
    """The server answered with an HTML page instead of the file."""

    def __init__(self, url, text):
        super().__init__(url)
        self.url, self.text = url, text


def lfs_pointer_message(url, head):
    fields = dict(line.split(" ", 1) for line in head.decode("ascii", "replace").splitlines() if " " in line)
    return (f"{url} served a Git LFS pointer ({fields.get('oid', '?')}, size {fields.get('size', '?')}), "
            f"not the file: that URL holds the repository's pointer, not the LFS content")


def _looks_like_html(head, content_type):
    start = head.lstrip()[:15].lower()
    return "text/html" in (content_type or "") or start.startswith((b"<!doctype html", b"<html"))


def session():
    """An opener that keeps cookies across its requests: Google Drive ties the
    confirmation token of its warning page to a cookie it set with that page."""
    return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))


def fetch_into(url, handle, label, max_bytes, timeout=60, opener=None):
    """Write the body of ``url`` into ``handle``; returns the number of bytes.
    Raises HtmlPage for an HTML answer, ZooError for an LFS pointer, a body over
    ``max_bytes`` or a transfer that ended before its Content-Length."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with (opener or session()).open(request, timeout=timeout) as response:
            final_url = response.geturl()
            total = response.headers.get("Content-Length")
            total = int(total) if total and total.isdigit() else None
            if total is not None and total > max_bytes:
                raise ZooError(f"{url}: the server announces {total} bytes, more than the {max_bytes} allowed")
            head = response.read(_SNIFF)
            if head.startswith(LFS_POINTER_START):
                raise ZooError(lfs_pointer_message(url, head))
            if _looks_like_html(head, response.headers.get("Content-Type")):
                raise HtmlPage(final_url, (head + response.read(_MAX_PAGE)).decode("utf-8", "replace"))
            received = len(head)
            handle.write(head)
            with progress_bar(total, label) as bar:
                bar.update(len(head))
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    received += len(chunk)
                    if received > max_bytes:
                        raise ZooError(f"{url}: more than the {max_bytes} bytes allowed; stopped")
                    handle.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        raise ZooError(f"{url}: {e}") from None
    if total is not None and received != total:
        raise ZooError(f"{url}: interrupted after {received} of {total} bytes")
    return received
