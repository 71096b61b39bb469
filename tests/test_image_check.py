"""Truncated and corrupt JPEG / PNG files are errors naming the file, in the
library and in the standalone deploy reader alike, never half pictures."""
import logging
import struct
import sys
import zlib

import cv2
import numpy as np
import pytest

from conftest import ROOT
from ppfacedet.core.errors import DataError
from ppfacedet.data.image_io import decode_checked, read_image

sys.path.insert(0, str(ROOT / "deploy" / "python"))
import image_check as deploy_check  # noqa: E402
import infer as deploy_infer  # noqa: E402


def picture(h=120, w=160, channels=3):
    """A photo-like image (smooth gradients plus texture), so JPEG has a long scan."""
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 255 // w), (y * 255 // h), ((x + y) * 7) % 256], -1).astype(np.uint8)
    noise = np.random.default_rng(0).integers(0, 40, (h, w, 3), np.uint8)
    image = cv2.add(base, noise)
    return image[..., 0] if channels == 1 else image


def encode(ext, image, params=()):
    return cv2.imencode(ext, image, list(params))[1].tobytes()


def png_chunk(kind, payload, crc=None):
    crc = zlib.crc32(kind + payload) if crc is None else crc
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def with_png_chunk(png, chunk):
    """``chunk`` inserted right after IHDR."""
    return png[:33] + chunk + png[33:]


def jpeg_scan_start(jpeg):
    return jpeg.index(b"\xff\xda")


def good_files():
    jpeg = encode(".jpg", picture())
    return {
        "baseline.jpg": jpeg,
        "progressive.jpg": encode(".jpg", picture(), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
        "gray.jpg": encode(".jpg", picture(channels=1)),
        "trailing_bytes.jpg": jpeg + b"\x00" * 16,  # some cameras pad after the end marker
        "rgb.png": encode(".png", picture()),
        "gray16.png": encode(".png", picture(channels=1).astype(np.uint16) * 257),
        "text_chunk.png": with_png_chunk(encode(".png", picture()), png_chunk(b"tEXt", b"Comment\x00hi")),
    }


def damaged_files():
    jpeg, png = encode(".jpg", picture(240, 320)), encode(".png", picture())
    mid = (jpeg_scan_start(jpeg) + len(jpeg)) // 2
    taller = bytearray(jpeg)
    sof = taller.index(b"\xff\xc0")
    taller[sof + 5:sof + 7] = struct.pack(">H", 480)  # header says twice the rows the data holds
    return {
        "cut_at_3kb.jpg": jpeg[:3000],
        "cut_before_end_marker.jpg": jpeg[:-2],
        "cut_in_headers.jpg": jpeg[:100],
        "marker_in_scan.jpg": jpeg[:mid] + b"\xff\xd3" + jpeg[mid + 2:],  # decoder: premature end of data segment
        "header_taller_than_data.jpg": bytes(taller),
        "cut_in_half.png": png[:len(png) // 2],
        "no_iend.png": png[:-12],
        "idat_crc.png": png[:-20] + bytes([png[-20] ^ 0x55]) + png[-19:],
        "text_chunk_crc.png": with_png_chunk(png, png_chunk(b"tEXt", b"Comment\x00hi", crc=1234)),
        "ihdr_crc.png": png[:20] + b"\x00\x00\x01\x00" + png[24:],
    }


def test_opencv_alone_passes_a_truncated_jpeg_as_an_image(tmp_path):
    """The failure this guards against: a grey-filled picture and no error."""
    (tmp_path / "half.jpg").write_bytes(damaged_files()["cut_at_3kb.jpg"])
    image = cv2.imread(str(tmp_path / "half.jpg"), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (240, 320, 3)


@pytest.mark.parametrize("name", sorted(good_files()))
def test_good_images_read_as_opencv_reads_them(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(good_files()[name])
    expected = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    for image, problem in [decode_checked(path.read_bytes()), deploy_check.decode_checked(path.read_bytes())]:
        assert problem is None
        np.testing.assert_array_equal(image, expected)
    assert read_image(str(path)).shape[2] == 3


@pytest.mark.parametrize("name", sorted(damaged_files()))
def test_damaged_images_are_errors_naming_the_file_in_library_and_deploy(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(damaged_files()[name])
    with pytest.raises(DataError) as library:
        read_image(str(path))
    with pytest.raises(deploy_infer.InputError) as deploy:
        deploy_infer.read_image(str(path))
    assert str(library.value).startswith(f"{path}: ") and "\n" not in str(library.value)
    assert str(library.value) == str(deploy.value), "library and deploy readers must agree"


def test_face_detector_reads_paths_and_names_a_damaged_one(tmp_path):
    from ppfacedet.api import FaceDetector
    detector = FaceDetector(str(ROOT / "configs/yunet_n.yml"))
    good, bad = tmp_path / "good.png", tmp_path / "bad.jpg"
    good.write_bytes(encode(".png", picture()))
    bad.write_bytes(damaged_files()["cut_at_3kb.jpg"])
    assert set(detector(str(good))) == {"boxes", "scores", "landmarks"}
    with pytest.raises(DataError, match="bad.jpg: truncated"):
        detector([str(good), str(bad)])


def test_training_skips_and_counts_a_truncated_image_with_its_path(tmp_path, caplog):
    from ppfacedet.core import load_config
    from ppfacedet.core.registry import DATASETS
    from tiny import make_tiny_config
    cfg = load_config(make_tiny_config(tmp_path, num_train=4))
    dataset = DATASETS.build(dict(cfg["train_dataset"]), "train_dataset")
    victim = dataset.records[1].image_path
    with open(victim, "rb") as f:
        data = f.read()
    with open(victim, "wb") as f:
        f.write(data[:len(data) // 2])
    with caplog.at_level(logging.WARNING):
        samples = [dataset[i] for i in range(len(dataset))]
    assert samples[1] is None and sum(s is None for s in samples) == 1
    assert victim in caplog.text and "truncated" in caplog.text


def test_infer_cli_reports_the_damaged_image_and_processes_the_rest(tmp_path):
    import subprocess
    import paddle
    from ppfacedet.core import load_config
    from ppfacedet.modeling.detector import build_model
    weights = tmp_path / "w.pdparams"
    paddle.save(build_model(load_config(str(ROOT / "configs/yunet_n.yml"))).state_dict(), str(weights))
    images = tmp_path / "images"
    images.mkdir()
    (images / "good.jpg").write_bytes(encode(".jpg", picture()))
    (images / "half.jpg").write_bytes(damaged_files()["cut_at_3kb.jpg"])
    run = subprocess.run([sys.executable, str(ROOT / "tools/infer.py"), "-c", str(ROOT / "configs/yunet_n.yml"),
                          "-o", f"weights={weights}", "--infer_dir", str(images), "--output_dir", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stderr
    assert f"{images / 'half.jpg'}: truncated" in run.stdout + run.stderr and "Traceback" not in run.stderr
    assert (tmp_path / "o" / "good.json").is_file() and not (tmp_path / "o" / "half.json").exists()
