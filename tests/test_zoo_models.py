"""Released models by name from a folder of official files (PPFACEDET_ZOO_DIR
= ../shared/data/weights), offline: converted once, then the same weights as a
hand conversion of the same file, through the API, the tools and a config."""
import os
import subprocess
import sys

import numpy as np
import pytest

from ppfacedet.api import FaceDetector
from ppfacedet.convert.apply import convert_official_weights
from ppfacedet.core.config import load_config
from ppfacedet.data.image_io import read_image
from ppfacedet.engine.pretrain import load_pretrained
from ppfacedet.modeling.detector import build_model
from ppfacedet.zoo import config_path, converted_weights
from tiny import ROOT

IMAGE = "val_subset_resized416/images/0--Parade/0_Parade_Parade_0_102.jpg"


@pytest.fixture
def zoo(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("PPFACEDET_ZOO_DIR", str(shared_data / "weights"))
    monkeypatch.setenv("PPFACEDET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PPFACEDET_OFFLINE", "1")
    return shared_data


def image(shared_data):
    return read_image(str(shared_data / "widerface" / IMAGE))


@pytest.mark.parametrize("name, official", [
    ("scrfd_500m_kps", "scrfd/scrfd_500m_bnkps.onnx"),
    ("yunet_n", "yunet/yunet_n.pth"),
    ("retinaface_mnet025", "retinaface/mobilenet0.25_Final.pth"),
])
def test_a_name_gives_the_converted_release_and_is_converted_once(zoo, capsys, name, official):
    det = FaceDetector.from_pretrained(name)
    assert f"{name}: converted" in capsys.readouterr().err
    by_hand, _ = convert_official_weights(load_config(config_path(name)), str(zoo / "weights" / official))
    for key, value in by_hand.state_dict().items():
        np.testing.assert_array_equal(det.model.state_dict()[key].numpy(), value.numpy(), err_msg=key)
    faces = det(image(zoo))
    assert (faces["scores"] > 0.5).sum() >= 1  # a crowd photo: the release finds faces
    again = FaceDetector.from_pretrained(name)
    assert "converted" not in capsys.readouterr().err  # the cached conversion is reused
    np.testing.assert_array_equal(again(image(zoo))["boxes"], faces["boxes"])


def test_pretrain_weights_by_name_fills_the_whole_model(zoo):
    model = build_model(load_config(config_path("yunet_n")))
    report = load_pretrained(model, "yunet_n")
    assert report.backbone_loaded == len(report.backbone) and report.left_at_init == 0
    assert report.path == converted_weights("yunet_n")


def test_tools_take_model_by_name_list_it_and_o_still_applies(zoo, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "tools/infer.py", "--model", "yunet_n", "--infer_img",
                        str(zoo / "widerface" / IMAGE), "--output_dir", str(out), "-o", "test.score_threshold=0.3"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / (os.path.splitext(os.path.basename(IMAGE))[0] + ".json")).is_file()
    r = subprocess.run([sys.executable, "tools/infer.py", "--model", "yunet_n", "--infer_img",
                        str(zoo / "widerface" / IMAGE), "-o", f"weights={tmp_path / 'mine.pdparams'}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 2 and "mine.pdparams" in r.stderr  # -o weights= wins over the zoo's
    r = subprocess.run([sys.executable, "tools/zoo.py", "list"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = {line.split()[0]: line for line in r.stdout.splitlines()[1:]}
    assert len(rows) == 16 and "0.076M" in rows["yunet_n"] and "89.20/88.30/81.10" in rows["yunet_n"]
    assert rows["yunet_n"].endswith("converted")  # by the infer run above
    assert rows["retinaface_mnet025"].endswith("official file")  # in the zoo folder, not converted yet
    assert rows["scrfd_10g_kps"].endswith(" no") and "non-commercial" in rows["scrfd_10g_kps"]
    r = subprocess.run([sys.executable, "tools/eval.py", "--model", "scrfd_10g_kps"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 2 and "det_10g.onnx = scrfd_10g_bnkps.onnx  (sha256 5838f7fe" in r.stderr
    assert "PPFACEDET_OFFLINE=1 forbids downloading" in r.stderr and "Traceback" not in r.stderr
