"""Where zoo files live on disk: the download cache, the converted weights,
and a folder of official files a person filled by hand (PPFACEDET_ZOO_DIR).

Cache layout, under ``~/.cache/ppfacedet`` or ``$PPFACEDET_CACHE_DIR``:
``zoo/files/<name>/<official file>`` (downloads, checked before they are
renamed into place) and ``zoo/converted/<name>-<sha256[:12]>.pdparams``
(the Paddle weights converted from that exact official file).
"""
import os

from ..core.download import cache_dir
from .registry import describe, file_sha256

ZOO_DIR_ENV = "PPFACEDET_ZOO_DIR"
_MAX_DEPTH = 3  # the zoo folder may keep files in per-family subfolders


def files_dir(entry):
    return os.path.join(cache_dir(), "zoo", "files", entry.name)


def cached_file(entry, zoo_file):
    return os.path.join(files_dir(entry), zoo_file.name)


def converted_file(entry, sha256):
    return os.path.join(cache_dir(), "zoo", "converted", f"{entry.name}-{sha256[:12]}.pdparams")


def zoo_dir():
    return os.environ.get(ZOO_DIR_ENV) or None


def _named_in(folder, file_names):
    base = os.path.abspath(folder)
    for root, dirs, files in os.walk(base):
        if root[len(base):].count(os.sep) >= _MAX_DEPTH:
            dirs[:] = []
        for name in sorted(files):
            if name in file_names:
                yield os.path.join(root, name)


class Candidate:
    """A local file under one of a zoo file's names, and whether its content is that file."""

    def __init__(self, path, zoo_file):
        self.path = path
        self.sha256 = file_sha256(path)
        self.verified = zoo_file.sha256 is not None and self.sha256 == zoo_file.sha256
        self.usable = self.verified or zoo_file.sha256 is None

    def rejection(self, zoo_file):
        what = describe(self.sha256)
        return (f"{self.path} has sha256 {self.sha256}, not {zoo_file.name}'s {zoo_file.sha256}"
                + (f": it is {what}" if what else ""))


def find_local(entry, zoo_file, folder):
    """(usable Candidate or None, [rejection messages]) for ``zoo_file`` in ``folder``."""
    rejected = []
    if not folder or not os.path.isdir(folder):
        return None, rejected
    for path in _named_in(folder, set(zoo_file.names)):
        candidate = Candidate(path, zoo_file)
        if candidate.usable:
            return candidate, rejected
        rejected.append(candidate.rejection(zoo_file))
    return None, rejected
