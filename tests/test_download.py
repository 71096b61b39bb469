"""Downloads against a small HTTP server on 127.0.0.1 started here: nothing
leaves the machine. A broken or tampered download is never used."""
import hashlib
import http.server
import os
from pathlib import Path

import numpy as np
import pytest

from ppfacedet.core.config import load_config
from ppfacedet.core.download import DownloadError, download
from ppfacedet.engine.trainer import Trainer
from local_server import serving
from torch_files import save_legacy

ROOT = Path(__file__).resolve().parents[1]
PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class _Files(http.server.BaseHTTPRequestHandler):
    """GET /<name>: the registered bytes; /cut/<name> promises all of them and
    sends half (a dropped connection)."""

    files = {}
    requests = []

    def do_GET(self):
        self.requests.append(self.path)
        cut = self.path.startswith("/cut/")
        body = self.files.get(self.path[len("/cut"):] if cut else self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[:len(body) // 2] if cut else body)
        if cut:
            self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    """(base URL, files, requests); the cache is a fresh folder and downloads are allowed."""
    monkeypatch.delenv("PPFACEDET_OFFLINE", raising=False)
    monkeypatch.setenv("PPFACEDET_CACHE_DIR", str(tmp_path / "cache"))
    handler = type("Files", (_Files,), {"files": {"/w.bin": PAYLOAD}, "requests": []})
    with serving(handler) as base:
        yield base, handler.files, handler.requests


def leftovers(tmp_path):
    return sorted(p.name for p in (tmp_path / "cache").glob("*")) if (tmp_path / "cache").exists() else []


def test_good_download_is_checked_cached_and_fetched_once(server, tmp_path):
    base, _, requests = server
    checks = {"sha256": hashlib.sha256(PAYLOAD).hexdigest(), "md5": hashlib.md5(PAYLOAD).hexdigest()}
    path = download(f"{base}/w.bin", checks)
    assert path == str(tmp_path / "cache" / "w.bin") and Path(path).read_bytes() == PAYLOAD
    assert not os.access(path, os.X_OK)
    assert download(f"{base}/w.bin", checks) == path
    assert requests == ["/w.bin"] and leftovers(tmp_path) == ["w.bin"]


def test_a_checksum_mismatch_is_discarded_not_cached(server, tmp_path):
    base, _, _ = server
    with pytest.raises(DownloadError, match="discarded, not used") as error:
        download(f"{base}/w.bin", {"sha256": "0" * 64})
    assert str(tmp_path / "cache" / "w.bin") in str(error.value)
    assert leftovers(tmp_path) == []


def test_an_interrupted_download_leaves_nothing(server, tmp_path):
    base, files, _ = server
    with pytest.raises(DownloadError, match="cannot download") as error:
        download(f"{base}/cut/w.bin")
    assert "put it at" in str(error.value) and leftovers(tmp_path) == []


def test_a_corrupt_cached_file_is_fetched_again(server, tmp_path):
    base, _, requests = server
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "w.bin").write_bytes(PAYLOAD[:1000])
    sha256 = {"sha256": hashlib.sha256(PAYLOAD).hexdigest()}
    with pytest.raises(DownloadError, match="the copy there now fails its check: sha256 is"):
        download(f"{base}/cut/w.bin", sha256)  # same cache name; the re-fetch is interrupted
    assert (tmp_path / "cache" / "w.bin").read_bytes() == PAYLOAD[:1000]  # and replaced nothing
    path = download(f"{base}/w.bin", sha256)
    assert Path(path).read_bytes() == PAYLOAD and requests == ["/cut/w.bin", "/w.bin"]


def test_missing_file_and_offline_name_the_file_and_where_to_put_it(server, tmp_path, monkeypatch):
    base, _, requests = server
    with pytest.raises(DownloadError, match="404") as error:
        download(f"{base}/other.pdparams", download_page="https://example.org/page")
    message = str(error.value)
    assert str(tmp_path / "cache" / "other.pdparams") in message and "https://example.org/page" in message
    monkeypatch.setenv("PPFACEDET_OFFLINE", "1")
    with pytest.raises(DownloadError, match="forbids downloads") as error:
        download(f"{base}/w.bin")
    assert str(tmp_path / "cache" / "w.bin") in str(error.value) and requests == ["/other.pdparams"]


def test_bad_checksum_settings_are_refused_before_any_request(server):
    base, _, requests = server
    with pytest.raises(DownloadError, match="sha256 must be 64 hex digits"):
        download(f"{base}/w.bin", {"sha256": "abc"})
    with pytest.raises(DownloadError, match="unknown checksum 'sha1'"):
        download(f"{base}/w.bin", {"sha1": "0" * 40})
    assert requests == []


def test_pretrain_weights_from_a_url_with_its_sha256(server, tmp_path, caplog):
    """The config form the RetinaFace configs use: {url, sha256}."""
    base, files, _ = server
    rng = np.random.default_rng(0)
    trainer = Trainer(load_config(str(ROOT / "configs" / "retinaface_mnet025_demo.yml"), [f"save_dir={tmp_path}"]))
    state = {f"module.{k}": rng.standard_normal(tuple(v.shape)).astype(np.float32)
             for k, v in trainer.model.backbone.state_dict().items()}
    save_legacy({"state_dict": state}, tmp_path / "mnet.tar")
    files["/mnet.tar"] = (tmp_path / "mnet.tar").read_bytes()
    source = {"url": f"{base}/mnet.tar", "sha256": hashlib.sha256(files["/mnet.tar"]).hexdigest()}
    with caplog.at_level("INFO", logger="ppfacedet"):
        trainer.load_pretrained(source)
    assert "135 of 135 backbone tensors loaded" in caplog.text
    np.testing.assert_array_equal(trainer.model.backbone.stage3[1][3].weight.numpy(),
                                  state["module.stage3.1.3.weight"])
