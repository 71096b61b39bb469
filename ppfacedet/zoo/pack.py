"""Read one member out of a zip release (insightface's buffalo_* packs).

Only the member asked for is read, and it is written to a path the caller
chose inside the cache: the archive's own names never become paths, so no
entry can write outside the cache. A member larger than the limit (its
header, or the bytes actually inflated: a header can lie) is refused.
"""
import posixpath
import zipfile

from .registry import ZooError

_CHUNK = 1 << 20


def _member_info(archive, member, where):
    names = archive.namelist()
    bad = [n for n in names if n.startswith("/") or ".." in n.split("/") or "\\" in n]
    if bad:
        raise ZooError(f"{where}: the archive holds unsafe paths ({', '.join(bad[:3])}); refused")
    if member in names:
        return archive.getinfo(member)
    same_base = [n for n in names if posixpath.basename(n) == posixpath.basename(member)]
    if len(same_base) == 1:  # packs differ in whether members sit in a folder named after the pack
        return archive.getinfo(same_base[0])
    raise ZooError(f"{where}: no member '{member}' in the archive"
                   + (f" ({len(same_base)} with that file name)" if same_base else ""))


def copy_member(zip_path, member, handle, max_bytes, where):
    """Write ``member`` of ``zip_path`` into ``handle``; returns its size."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            info = _member_info(archive, member, where)
            if info.file_size > max_bytes:
                raise ZooError(f"{where}: member {info.filename} is {info.file_size} bytes, more than the "
                               f"{max_bytes} allowed")
            written = 0
            with archive.open(info) as src:
                for chunk in iter(lambda: src.read(_CHUNK), b""):
                    written += len(chunk)
                    if written > max_bytes:
                        raise ZooError(f"{where}: member {info.filename} inflates past {max_bytes} bytes; refused")
                    handle.write(chunk)
            return written
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as e:
        raise ZooError(f"{where}: not a readable zip archive ({e})") from None
