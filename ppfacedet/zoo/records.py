"""What the zoo knows about a released model and the official files behind it.

A ``Source`` is one place a file can be fetched from; a ``ZooFile`` is one
official file (pinned by sha256 where anyone has published or computed it);
an ``Entry`` is a name the tools accept (the config's name) with the files
that serve it, in the order they are tried.
"""
from dataclasses import dataclass, field
from typing import Optional, Tuple

# How a Source's ``ref`` is read (fetch.py turns each into a URL or an action).
SOURCE_KINDS = {
    "url": "a direct URL: a GitHub release asset, a raw file pinned to a commit, Git LFS media",
    "gdrive": "a Google Drive file id (large files answer with a confirmation page first)",
    "modelscope": "'<model id>@<revision>:<file path>' through ModelScope's file API",
    "pack": "'<zip URL>!<member>': a zip release of which only one member is read",
}


@dataclass(frozen=True)
class Source:
    kind: str
    ref: str
    note: str = ""  # who publishes it, when it is a mirror rather than the author's own copy

    def __post_init__(self):
        if self.kind not in SOURCE_KINDS:
            raise ValueError(f"unknown source kind {self.kind!r}; valid: {', '.join(SOURCE_KINDS)}")
        if self.kind == "pack" and "!" not in self.ref:
            raise ValueError(f"pack source {self.ref!r} must be '<zip URL>!<member>'")


@dataclass(frozen=True)
class ZooFile:
    name: str                       # the official file name (what PPFACEDET_ZOO_DIR holds)
    sha256: Optional[str]           # None: nobody published it and it could not be computed here
    size: Optional[int]             # bytes, when known
    sources: Tuple[Source, ...]
    checksum_origin: str            # where the sha256 comes from, or why there is none
    also_named: Tuple[str, ...] = ()  # the same bytes published under other names

    @property
    def names(self):
        return (self.name,) + self.also_named


@dataclass(frozen=True)
class Entry:
    name: str                       # configs/<name>.yml
    family: str
    page: str                       # the official page a person downloads from
    licence: str
    non_commercial: str             # "" or why the weights may not be used commercially
    wider_ap: Tuple[float, float, float]  # official WIDER val AP (easy, medium, hard), percent
    ap_source: str
    params: int                     # counted by ppfacedet.modeling.flops (tests check them)
    flops: int                      # per 640x480 image, same counter
    files: Tuple[ZooFile, ...]


@dataclass(frozen=True)
class KnownFile:
    """An official file the zoo recognises but serves under no name (other weights or anchors)."""
    name: str
    sha256: str
    size: int
    what: str = field(default="")
