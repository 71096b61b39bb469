"""Files named by URL (pretrained weights): fetched once into a cache, checked,
and only then moved into place.

PaddleDetection's convention: ``~/.cache/ppfacedet/<file name>`` (the folder
is ``$PPFACEDET_CACHE_DIR`` when set). A download goes to a temporary file in
that folder and is renamed over the final name only when it is complete and
its md5/sha256 (where one is given) matches, so an interrupted or tampered
download is never used. A cached file that fails its check is fetched again.
Nothing here executes or imports what it fetched; the weight readers parse it
with restricted unpicklers.

``PPFACEDET_OFFLINE=1`` refuses every download (the test suite sets it) and
raises the same error as a failed one: which file to fetch and where to put it.
"""
import hashlib
import http.client
import os
import re
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request

from .errors import PPFaceDetError
from .logger import get_logger

LOG = get_logger()
CACHE_ENV = "PPFACEDET_CACHE_DIR"
OFFLINE_ENV = "PPFACEDET_OFFLINE"
CHECKSUM_LENGTHS = {"sha256": 64, "md5": 32}  # hex digits of each supported digest
_CHUNK = 1 << 20


class DownloadError(PPFaceDetError):
    """A URL could not be turned into a checked local file."""


def is_url(text):
    return isinstance(text, str) and text.startswith(("https://", "http://"))


def cache_dir():
    return os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "ppfacedet")


def cached_path(url):
    """Where the file of ``url`` lives in the cache: its own file name."""
    name = os.path.basename(urllib.parse.unquote(urllib.parse.urlparse(url).path))
    if not name or name.startswith(".") or not re.fullmatch(r"[\w.+-]+", name):
        raise DownloadError(f"{url}: the URL does not end in a usable file name")
    return os.path.join(cache_dir(), name)


def check_checksums(checksums, where):
    """``{algorithm: hex digest}`` with the algorithms and lengths verified."""
    out = {}
    for algorithm, digest in (checksums or {}).items():
        if digest is None:
            continue
        digest = str(digest).lower()
        if algorithm not in CHECKSUM_LENGTHS:
            raise DownloadError(f"{where}: unknown checksum '{algorithm}'; valid: {', '.join(CHECKSUM_LENGTHS)}")
        if not re.fullmatch(f"[0-9a-f]{{{CHECKSUM_LENGTHS[algorithm]}}}", digest):
            raise DownloadError(f"{where}: {algorithm} must be {CHECKSUM_LENGTHS[algorithm]} hex digits, "
                                f"got {digest!r}")
        out[algorithm] = digest
    return out


def checksum_problem(path, checksums):
    """None if ``path`` has every expected digest, else what differs."""
    if not checksums:
        return None
    hashers = {algorithm: hashlib.new(algorithm) for algorithm in checksums}
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            for hasher in hashers.values():
                hasher.update(chunk)
    for algorithm, expected in checksums.items():
        got = hashers[algorithm].hexdigest()
        if got != expected:
            return f"{algorithm} is {got}, expected {expected}"
    return None


def _manual_fetch_hint(url, target, download_page):
    source = f"{url}" + (f" (or by hand from {download_page})" if download_page else "")
    return (f"download {source} yourself and put it at {target} (the cache folder is ${CACHE_ENV} "
            f"when set), or give a local file with -o pretrain_weights=PATH")


def progress_bar(total, name):
    """A byte progress bar on stderr (silent when stderr is not a terminal)."""
    from tqdm import tqdm
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
                disable=not sys.stderr.isatty())


def _stream_to(url, handle, timeout, label):
    """Write the body of ``url`` to ``handle``; an early end of the stream is an error."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        total = response.headers.get("Content-Length")
        total = int(total) if total and total.isdigit() else None
        received = 0
        with progress_bar(total, label) as bar:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                handle.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if total is not None and received != total:
        raise DownloadError(f"interrupted after {received} of {total} bytes")


def download(url, checksums=None, download_page=None, timeout=60):
    """The local path of ``url``'s file, downloaded unless a good copy is cached.

    ``checksums``: ``{"sha256": hex, "md5": hex}`` (either or both, or none).
    ``download_page``: where a person can get the file by hand when the URL fails.
    """
    checksums = check_checksums(checksums, url)
    target = cached_path(url)
    stale = None
    if os.path.isfile(target):
        stale = checksum_problem(target, checksums)
        if stale is None:
            return target
        LOG.warning("cached %s fails its check (%s): fetching it again", target, stale)
    hint = _manual_fetch_hint(url, target, download_page)
    if stale:
        hint += f" (the copy there now fails its check: {stale})"
    if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        raise DownloadError(f"{os.path.basename(target)} is needed and {OFFLINE_ENV} forbids downloads: {hint}")
    if not checksums:
        LOG.warning("%s has no checksum in the config: its content cannot be verified", url)
    folder = os.path.dirname(target)
    try:
        os.makedirs(folder, exist_ok=True)
        part = tempfile.NamedTemporaryFile(dir=folder, prefix=os.path.basename(target) + ".", suffix=".part",
                                           delete=False)
    except OSError as e:
        raise DownloadError(f"cannot write to the cache folder {folder} ({e}); set {CACHE_ENV} to a "
                            f"writable folder") from None
    LOG.info("downloading %s to %s", url, target)
    try:
        try:
            with part:
                _stream_to(url, part, timeout, os.path.basename(target))
        except (urllib.error.URLError, http.client.HTTPException, OSError, DownloadError) as e:
            raise DownloadError(f"cannot download {url} ({e}): {hint}") from None
        problem = checksum_problem(part.name, checksums)
        if problem is not None:
            raise DownloadError(f"{url}: the downloaded file's {problem}; it was discarded, not used. "
                                f"If the URL is right, {hint}")
        os.replace(part.name, target)
    finally:
        if os.path.exists(part.name):
            os.remove(part.name)
    return target
