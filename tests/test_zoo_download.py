"""The zoo's downloads against a server on 127.0.0.1 that plays each host:
a redirect (GitHub release assets), Google Drive's confirmation page for a
large file, a Git LFS pointer served instead of the file, a zip pack, a
dropped connection and a wrong file. Nothing leaves the machine."""
import hashlib
import http.server
import io
import zipfile

import pytest

from local_server import serving
from ppfacedet.zoo import fetch, hosts
from ppfacedet.zoo.records import Entry, Source, ZooFile
from ppfacedet.zoo.registry import ZooError

PAYLOAD = bytes(range(256)) * 1024  # 256 KiB of "weights"
SHA = hashlib.sha256(PAYLOAD).hexdigest()
LFS_POINTER = (f"version https://git-lfs.github.com/spec/v1\noid sha256:{SHA}\nsize {len(PAYLOAD)}\n").encode()
DRIVE_PAGE = """<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>
<p>Google Drive can't scan this file for viruses.</p>
<form id="download-form" action="/usercontent/download" method="get">
<input type="submit" value="Download anyway"/><input type="hidden" name="id" value="FILEID">
<input type="hidden" name="export" value="download"><input type="hidden" name="confirm" value="t">
<input type="hidden" name="uuid" value="1234-abcd"></form></body></html>"""


def _zip(members):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


class _Hosts(http.server.BaseHTTPRequestHandler):
    """Paths: /asset -> 302 to /objects/w.bin (a release asset); /objects/w.bin the file; /lfs the
    pointer; /uc the Drive page (with a cookie), whose form leads to /usercontent/download (which
    wants the cookie, or answers with the page again); /cut half the file;
    /other another file; /pack.zip, /evil.zip zip packs."""

    requests = []

    def do_GET(self):
        self.requests.append(self.path)
        path = self.path.split("?")[0]
        if path == "/asset":
            self.send_response(302)
            self.send_header("Location", "/objects/w.bin")
            self.end_headers()
            return
        confirmed = "confirm=t" in self.path and "download_warning=t0k" in (self.headers.get("Cookie") or "")
        bodies = {"/objects/w.bin": PAYLOAD, "/lfs": LFS_POINTER, "/other": PAYLOAD[::-1],
                  "/usercontent/download": PAYLOAD if confirmed else DRIVE_PAGE.encode(),
                  "/uc": DRIVE_PAGE.encode(), "/cut": PAYLOAD,
                  "/pack.zip": _zip({"pack/readme.txt": b"x", "pack/det.onnx": PAYLOAD}),
                  "/evil.zip": _zip({"../escape.onnx": PAYLOAD, "det.onnx": PAYLOAD})}
        body = bodies.get(path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8" if body.startswith(b"<!DOCTYPE")
                         else "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        if path == "/uc":  # the page's token only works with the cookie it sets
            self.send_header("Set-Cookie", "download_warning=t0k; Path=/")
        self.end_headers()
        self.wfile.write(body[:len(body) // 2] if path == "/cut" else body)
        if path == "/cut":
            self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def host(tmp_path, monkeypatch):
    """(base URL, requests): the zoo's Drive endpoint points here, the cache is fresh, downloads allowed."""
    monkeypatch.delenv("PPFACEDET_OFFLINE", raising=False)
    monkeypatch.delenv("PPFACEDET_ZOO_DIR", raising=False)
    monkeypatch.setenv("PPFACEDET_CACHE_DIR", str(tmp_path / "cache"))
    handler = type("Hosts", (_Hosts,), {"requests": []})
    with serving(handler) as base:
        monkeypatch.setattr(hosts, "DRIVE_DOWNLOAD", f"{base}/uc")
        yield base, handler.requests


def entry_with(*files):
    return Entry("scrfd_500m_kps", "SCRFD", "https://example.org/official-page", "test licence",
                 "test weights are non-commercial", (1.0, 1.0, 1.0), "-", 1, 1, tuple(files))


def zoo_file(*sources, sha256=SHA, size=len(PAYLOAD), name="det.onnx"):
    return ZooFile(name, sha256, size, tuple(sources), "test")


def cache_listing(tmp_path):
    folder = tmp_path / "cache" / "zoo" / "files" / "scrfd_500m_kps"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_a_redirected_release_asset_is_checked_cached_and_fetched_once(host, tmp_path, capsys):
    base, requests = host
    entry = entry_with(zoo_file(Source("url", f"{base}/asset")))
    found = fetch.official_file(entry)
    assert found.verified and found.sha256 == SHA
    assert open(found.path, "rb").read() == PAYLOAD and cache_listing(tmp_path) == ["det.onnx"]
    assert "NOT FOR COMMERCIAL USE: test weights are non-commercial" in capsys.readouterr().err
    assert fetch.official_file(entry).path == found.path
    assert requests == ["/asset", "/objects/w.bin"]  # the second call never touched the network


def test_google_drive_confirmation_page_is_followed_to_the_file(host):
    base, requests = host
    found = fetch.official_file(entry_with(zoo_file(Source("gdrive", "FILEID"))))
    assert open(found.path, "rb").read() == PAYLOAD
    assert requests[0] == "/uc?export=download&id=FILEID"
    assert requests[1].startswith("/usercontent/download?") and "confirm=t" in requests[1]
    assert "uuid=1234-abcd" in requests[1] and "id=FILEID" in requests[1]


def test_the_confirmation_page_is_found_in_the_page_not_guessed():
    legacy = '<html><a id="uc-download-link" href="/uc?export=download&amp;confirm=AbC1&amp;id=X">Download</a>'
    assert hosts.drive_confirmation_url(legacy, "https://drive.google.com/uc?id=X") == \
        "https://drive.google.com/uc?export=download&confirm=AbC1&id=X"
    assert hosts.drive_confirmation_url("<html><p>Quota exceeded</p></html>", "https://h/uc") is None


def test_a_git_lfs_pointer_is_an_error_and_the_next_source_is_tried(host, tmp_path, capsys):
    base, _ = host
    entry = entry_with(zoo_file(Source("url", f"{base}/lfs"), Source("url", f"{base}/objects/w.bin")))
    found = fetch.official_file(entry)
    err = capsys.readouterr().err
    assert "served a Git LFS pointer (sha256:" in err and open(found.path, "rb").read() == PAYLOAD
    with pytest.raises(ZooError, match="Git LFS pointer"):
        fetch.official_file(entry_with(zoo_file(Source("url", f"{base}/lfs"), name="other.onnx")))
    assert cache_listing(tmp_path) == ["det.onnx"]


def test_one_member_is_read_from_a_zip_pack(host, tmp_path):
    base, _ = host
    found = fetch.official_file(entry_with(zoo_file(Source("pack", f"{base}/pack.zip!det.onnx"))))
    assert open(found.path, "rb").read() == PAYLOAD
    assert cache_listing(tmp_path) == ["det.onnx"]  # neither the zip nor its other members stay


def test_a_pack_with_a_path_leaving_the_folder_or_over_the_limit_is_refused(host, tmp_path, monkeypatch):
    base, _ = host
    with pytest.raises(ZooError, match="unsafe paths"):
        fetch.official_file(entry_with(zoo_file(Source("pack", f"{base}/evil.zip!det.onnx"))))
    assert not (tmp_path / "cache" / "zoo" / "files" / "escape.onnx").exists()
    monkeypatch.setattr(fetch, "MAX_FILE_BYTES", len(PAYLOAD) - 1)
    with pytest.raises(ZooError, match="more than the"):
        fetch.official_file(entry_with(zoo_file(Source("pack", f"{base}/pack.zip!det.onnx"))))
    assert cache_listing(tmp_path) == []


def test_an_interrupted_transfer_leaves_nothing(host, tmp_path):
    base, _ = host
    with pytest.raises(ZooError, match="interrupted after") as error:
        fetch.official_file(entry_with(zoo_file(Source("url", f"{base}/cut"))))
    assert "every official source failed" in str(error.value) and cache_listing(tmp_path) == []


def test_a_wrong_file_is_discarded_by_size_or_sha256(host, tmp_path):
    base, _ = host
    with pytest.raises(ZooError, match="is not det.onnx's"):
        fetch.official_file(entry_with(zoo_file(Source("url", f"{base}/other"))))
    with pytest.raises(ZooError, match="got 262144 bytes, det.onnx has 7"):
        fetch.official_file(entry_with(zoo_file(Source("url", f"{base}/objects/w.bin"), size=7)))
    assert cache_listing(tmp_path) == []


def test_a_file_without_a_published_checksum_is_used_but_said_unverified(host, capsys):
    base, _ = host
    found = fetch.official_file(entry_with(zoo_file(Source("url", f"{base}/other"), sha256=None, size=None)))
    assert not found.verified
    assert f"UNVERIFIED: no checksum is published for this file (test); the copy from {base}/other has sha256 " \
           f"{hashlib.sha256(PAYLOAD[::-1]).hexdigest()}" in capsys.readouterr().err


def test_offline_a_missing_file_names_itself_its_sha256_the_page_and_the_folder(host, tmp_path, monkeypatch):
    base, requests = host
    monkeypatch.setenv("PPFACEDET_OFFLINE", "1")
    monkeypatch.setenv("PPFACEDET_ZOO_DIR", str(tmp_path / "zoo"))
    (tmp_path / "zoo").mkdir()
    (tmp_path / "zoo" / "det.onnx").write_bytes(b"not it")
    with pytest.raises(ZooError) as error:
        fetch.official_file(entry_with(zoo_file(Source("gdrive", "FILEID"))))
    message = str(error.value)
    assert "PPFACEDET_OFFLINE=1 forbids downloading" in message and f"det.onnx  (sha256 {SHA}" in message
    assert "https://example.org/official-page" in message and "https://drive.google.com/file/d/FILEID/view" in message
    assert f"in {tmp_path / 'zoo'} (PPFACEDET_ZOO_DIR)" in message
    assert f"Refused: {tmp_path / 'zoo' / 'det.onnx'} has sha256 {hashlib.sha256(b'not it').hexdigest()}" in message
    assert requests == []
    (tmp_path / "zoo" / "sub").mkdir()
    (tmp_path / "zoo" / "sub" / "det.onnx").write_bytes(PAYLOAD)  # the right bytes, in a subfolder
    assert fetch.official_file(entry_with(zoo_file(Source("gdrive", "FILEID")))).verified
