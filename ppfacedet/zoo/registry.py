"""Look-ups in the catalog: a name's entry, and which official file a local file is."""
import hashlib
import os

from ..core.errors import PPFaceDetError
from ..core.registry import closest
from .catalog import ENTRIES, KNOWN_ELSEWHERE

_BY_NAME = {entry.name: entry for entry in ENTRIES}
CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")


class ZooError(PPFaceDetError):
    """A zoo name, file or download that cannot be used."""


def names():
    return [entry.name for entry in ENTRIES]


def is_zoo_name(text):
    return isinstance(text, str) and text in _BY_NAME


def entry(name):
    if name not in _BY_NAME:
        raise ZooError(f"'{name}' is not a model in the zoo{closest(str(name), _BY_NAME)}; "
                       f"names: {', '.join(names())} (tools/zoo.py list)")
    return _BY_NAME[name]


def config_path(name):
    return os.path.join(CONFIG_DIR, f"{entry(name).name}.yml")


def file_sha256(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def identify_sha256(sha256):
    """[(what, detail)] for every catalog item with this sha256: ('served', (entry, zoo file)) or
    ('elsewhere', KnownFile)."""
    found = [("served", (e, f)) for e in ENTRIES for f in e.files if f.sha256 == sha256]
    found += [("elsewhere", k) for k in KNOWN_ELSEWHERE if k.sha256 == sha256]
    return found


def describe(sha256):
    """One line saying what the file with this sha256 is, or None if the zoo does not know it."""
    lines = []
    for kind, detail in identify_sha256(sha256):
        if kind == "served":
            e, f = detail
            lines.append(f"{f.name}: zoo file of {e.name} ({e.family})")
        else:
            lines.append(f"{detail.name}: {detail.what}")
    return "; ".join(lines) or None
