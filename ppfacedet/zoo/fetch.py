"""An entry's official file on local disk: from PPFACEDET_ZOO_DIR, the cache,
or downloaded from its official sources in order.

A download goes to a temporary file in the cache folder and is renamed into
place only after its size and sha256 match the catalog; a file nobody
published a checksum for is used, but said to be unverified, with the sha256
it had. ``PPFACEDET_OFFLINE=1`` never touches the network: a file missing
locally is an error that names the file, its sha256, where to get it and the
folder to put it in. The licence is printed when a file is first fetched.
"""
import os
import sys
import tempfile

from ..core.download import OFFLINE_ENV
from .hosts import drive_confirmation_url, drive_page, drive_url, modelscope_page, modelscope_url
from .pack import copy_member
from .registry import ZooError, file_sha256
from .store import ZOO_DIR_ENV, Candidate, cached_file, files_dir, find_local, zoo_dir
from .transfer import HtmlPage, fetch_into, session

MAX_FILE_BYTES = 512 << 20   # the largest official file (Resnet50_Final.pth) is 105 MiB
MAX_PACK_BYTES = 1 << 30     # insightface packs: buffalo_l 275 MiB, antelopev2 about 390 MiB


class Found:
    def __init__(self, entry, zoo_file, path, sha256, verified):
        self.entry, self.zoo_file, self.path, self.sha256, self.verified = entry, zoo_file, path, sha256, verified


def licence_notice(entry):
    text = f"{entry.name}: licence {entry.licence}."
    if entry.non_commercial:
        text += f" NOT FOR COMMERCIAL USE: {entry.non_commercial}."
    return text


def say(text):
    print(text, file=sys.stderr, flush=True)


def offline():
    return os.environ.get(OFFLINE_ENV, "") not in ("", "0")


def source_label(source):
    if source.kind == "gdrive":
        return f"Google Drive {drive_page(source.ref)}"
    if source.kind == "modelscope":
        return f"ModelScope {modelscope_page(source.ref)} ({source.ref.partition(':')[2]})"
    if source.kind == "pack":
        pack_url, _, member = source.ref.partition("!")
        return f"{member} inside {pack_url}"
    return source.ref


def missing_message(entry, reason, rejected=()):
    lines = [f"{entry.name}: {reason}. It needs one of these official files (tried in this order):"]
    for zoo_file in entry.files:
        size = f", {zoo_file.size} bytes" if zoo_file.size else ""
        sha = zoo_file.sha256 or "not published (any copy is taken, unverified)"
        lines.append(f"  {' = '.join(zoo_file.names)}  (sha256 {sha}{size})")
        lines += [f"      from {source_label(source)}" for source in zoo_file.sources]
    lines.append(f"Official page: {entry.page}")
    folder = zoo_dir()
    where = (f"in {os.path.abspath(folder)} ({ZOO_DIR_ENV})" if folder else
             f"in a folder and set {ZOO_DIR_ENV}=<that folder>, or in {files_dir(entry)}")
    lines.append(f"Put one of them, under the name shown, {where}: it is checked by its sha256.")
    lines += [f"Refused: {message}" for message in rejected]
    return "\n".join(lines)


def locate(entry):
    """(Found or None, [rejections]) from the zoo folder, then the cache, without any network."""
    rejected = []
    for zoo_file in entry.files:
        candidate, refused = find_local(entry, zoo_file, zoo_dir())
        rejected += refused
        if candidate is None and os.path.isfile(cached_file(entry, zoo_file)):
            cached = Candidate(cached_file(entry, zoo_file), zoo_file)
            candidate = cached if cached.usable else None
            if not cached.usable:
                rejected.append(cached.rejection(zoo_file))
        if candidate is not None:
            return Found(entry, zoo_file, candidate.path, candidate.sha256, candidate.verified), rejected
    return None, rejected


def _write_source(source, handle, label, folder, timeout):
    """Write the file one source gives into ``handle``."""
    if source.kind == "pack":
        pack_url, _, member = source.ref.partition("!")
        with tempfile.NamedTemporaryFile(dir=folder, prefix="pack.", suffix=".zip.part") as pack:
            try:
                fetch_into(pack_url, pack, os.path.basename(pack_url), MAX_PACK_BYTES, timeout)
            except HtmlPage:
                raise ZooError(f"{pack_url} answered with an HTML page, not the zip") from None
            pack.flush()
            copy_member(pack.name, member, handle, MAX_FILE_BYTES, pack_url)
        return
    url = {"gdrive": drive_url, "modelscope": modelscope_url}.get(source.kind, lambda ref: ref)(source.ref)
    opener = session()  # the confirmation request carries the cookies the page set
    try:
        fetch_into(url, handle, label, MAX_FILE_BYTES, timeout, opener)
    except HtmlPage as page:
        follow = drive_confirmation_url(page.text, page.url) if source.kind == "gdrive" else None
        if follow is None:
            raise ZooError(f"{url} answered with an HTML page, not the file"
                           + (" (no download form on it: quota exceeded, or not shared?)"
                              if source.kind == "gdrive" else "")) from None
        try:
            fetch_into(follow, handle, label, MAX_FILE_BYTES, timeout, opener)
        except HtmlPage:
            raise ZooError(f"{url}: Google Drive's confirmation led to another page, not the file") from None


def _check(zoo_file, path, where):
    """The sha256 of a complete download; ZooError if it is not the catalogued file."""
    size = os.path.getsize(path)
    if zoo_file.size is not None and size != zoo_file.size:
        raise ZooError(f"{where}: got {size} bytes, {zoo_file.name} has {zoo_file.size}; discarded")
    sha256 = file_sha256(path)
    if zoo_file.sha256 is not None and sha256 != zoo_file.sha256:
        raise ZooError(f"{where}: sha256 {sha256} is not {zoo_file.name}'s {zoo_file.sha256}; discarded")
    return sha256


def download(entry, zoo_file, source, timeout=60):
    """Fetch ``zoo_file`` from one source into the cache; returns a Found."""
    target = cached_file(entry, zoo_file)
    folder = os.path.dirname(target)
    os.makedirs(folder, exist_ok=True)
    where = source_label(source)
    part = tempfile.NamedTemporaryFile(dir=folder, prefix=zoo_file.name + ".", suffix=".part", delete=False)
    try:
        with part:
            _write_source(source, part, zoo_file.name, folder, timeout)
        sha256 = _check(zoo_file, part.name, where)
        os.replace(part.name, target)
    finally:
        if os.path.exists(part.name):
            os.remove(part.name)
    if zoo_file.sha256 is None:
        say(f"{zoo_file.name}: UNVERIFIED: no checksum is published for this file ({zoo_file.checksum_origin}); "
            f"the copy from {where} has sha256 {sha256}")
    return Found(entry, zoo_file, target, sha256, zoo_file.sha256 is not None)


def official_file(entry, timeout=60):
    """A Found for ``entry``: local if possible, else downloaded (the licence is printed then)."""
    found, rejected = locate(entry)
    if found is not None:
        return found
    if offline():
        raise ZooError(missing_message(entry, f"no official file is on this machine and {OFFLINE_ENV}=1 "
                                              f"forbids downloading one", rejected))
    failures = []
    for zoo_file in entry.files:
        for source in zoo_file.sources:
            say(f"{entry.name}: fetching {zoo_file.name} from {source_label(source)}")
            try:
                found = download(entry, zoo_file, source, timeout)
            except (ZooError, OSError) as e:
                failures.append(str(e))
                say(f"  failed: {e}")
                continue
            say(licence_notice(entry))
            return found
    raise ZooError(missing_message(entry, "every official source failed", rejected + failures))
