"""The command-line tools, run as a user runs them (subprocesses)."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import paddle
import pytest

from official_retinaface import detect as official_retinaface_detect
from ppfacedet.core import load_config
from ppfacedet.modeling.detector import build_model
from tiny import ROOT, make_tiny_config
from detections import as_arrays, assert_same_faces

PY = sys.executable


def run_tool(*args, cwd=ROOT):
    return subprocess.run([PY, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def mnet_weights(tmp_path_factory):
    """RetinaFace-mnet0.25 with random weights: enough to exercise the CLI contract."""
    paddle.seed(0)
    path = tmp_path_factory.mktemp("w") / "random.pdparams"
    paddle.save(build_model(load_config(str(ROOT / "configs/retinaface_mnet025.yml"))).state_dict(), str(path))
    return str(path)


@pytest.fixture(scope="module")
def official_mnet(shared_data_module, tmp_path_factory):
    out = tmp_path_factory.mktemp("conv") / "mnet.pdparams"
    r = run_tool("tools/convert_weights.py", "-c", "configs/retinaface_mnet025.yml",
                 "--src", str(shared_data_module / "weights/retinaface/mobilenet0.25_Final.pth"), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "converted" in r.stdout
    return str(out)


@pytest.fixture(scope="module")
def shared_data_module():
    from conftest import SHARED_DATA
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data not present: official weights and WIDER data are not redistributable")
    return SHARED_DATA


def test_help_of_every_tool_explains_usage():
    for tool in ["train", "eval", "infer", "convert_weights"]:
        r = run_tool(f"tools/{tool}.py", "--help")
        assert r.returncode == 0 and "usage" in r.stdout and "-o" in r.stdout, tool


def test_infer_writes_json_drawing_and_wider_txt(tmp_path, mnet_weights):
    images = tmp_path / "imgs" / "0--Parade"
    images.mkdir(parents=True)
    for i in range(2):
        cv2.imwrite(str(images / f"img_{i}.jpg"), np.random.default_rng(i).integers(0, 255, (96, 128, 3), np.uint8))
    out = tmp_path / "out"
    r = run_tool("tools/infer.py", "-c", "configs/retinaface_mnet025.yml", "-o", f"weights={mnet_weights}",
                 "--infer_dir", str(tmp_path / "imgs"), "--output_dir", str(out), "--threshold", "0.0", "--save_txt")
    assert r.returncode == 0, r.stderr
    data = json.loads((out / "img_0.json").read_text())
    assert data["faces"], "threshold 0 keeps every detection"
    face = data["faces"][0]
    assert len(face["box"]) == 4 and len(face["landmarks"]) == 5 and 0 <= face["score"] <= 1
    assert cv2.imread(str(out / "img_0.jpg")).shape == (96, 128, 3)
    lines = (out / "0--Parade" / "img_1.txt").read_text().splitlines()
    assert lines[0] == "img_1.jpg" and int(lines[1]) == len(lines) - 2 and len(lines[2].split()) == 5


def test_infer_on_an_unreadable_image_names_it_without_traceback(tmp_path, mnet_weights):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\x00garbage")
    r = run_tool("tools/infer.py", "-c", "configs/retinaface_mnet025.yml", "-o", f"weights={mnet_weights}",
                 "--infer_img", str(bad), "--output_dir", str(tmp_path / "o"))
    assert r.returncode != 0
    assert "broken.jpg" in r.stdout + r.stderr and "Traceback" not in r.stderr


def test_config_errors_are_one_line_with_the_closest_key(tmp_path, mnet_weights):
    r = run_tool("tools/infer.py", "-c", "configs/retinaface_mnet025.yml", "-o", f"weight={mnet_weights}",
                 "--infer_img", "x.jpg")
    assert r.returncode == 2 and "did you mean 'weights'" in r.stderr and "Traceback" not in r.stderr
    r = run_tool("tools/train.py", "-c", "configs/retinaface_mnet025.yml", "-o", "model.backbone.type=MobilNetV1")
    assert r.returncode == 2 and "MobileNetV1" in r.stderr and "Traceback" not in r.stderr


def test_train_then_eval_cli_on_tiny_data(tmp_path):
    cfg = make_tiny_config(tmp_path)
    r = run_tool("tools/train.py", "-c", cfg, "-o", "epochs=1", "--eval")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "hard AP" in r.stdout and "img/s" in r.stdout and "eta" in r.stdout
    weights = tmp_path / "output" / "tiny" / "model_final.pdparams"
    r = run_tool("tools/eval.py", "-c", cfg, "-o", f"weights={weights}", "--output_dir", str(tmp_path / "preds"),
                 "--plot", str(tmp_path / "pr.png"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Easy   Val AP:" in r.stdout and "Hard   Val AP:" in r.stdout
    assert (tmp_path / "pr.png").stat().st_size > 1000
    assert any(p.endswith(".txt") for _, _, files in os.walk(tmp_path / "preds") for p in files)


def test_convert_rejects_a_checkpoint_of_another_model(tmp_path, shared_data_module):
    r = run_tool("tools/convert_weights.py", "-c", "configs/retinaface_r50.yml",
                 "--src", str(shared_data_module / "weights/retinaface/mobilenet0.25_Final.pth"),
                 "--out", str(tmp_path / "x.pdparams"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert not (tmp_path / "x.pdparams").exists()


def test_infer_detections_equal_the_official_retinaface_pipeline(tmp_path, official_mnet, shared_data_module):
    full = shared_data_module / "widerface/WIDER_val/images/0--Parade/0_Parade_marchingband_1_149.jpg"
    subset = sorted((shared_data_module / "widerface/val_subset_resized416/images/0--Parade").glob("*.jpg"))[:2]
    img_dir = tmp_path / "imgs"
    img_dir.mkdir()
    for p in [full, *subset]:
        os.symlink(p, img_dir / p.name)
    out = tmp_path / "out"
    r = run_tool("tools/infer.py", "-c", "configs/retinaface_mnet025.yml", "-o", f"weights={official_mnet}",
                 "--infer_dir", str(img_dir), "--output_dir", str(out), "--threshold", "0.02")
    assert r.returncode == 0, r.stderr
    onnx = str(shared_data_module / "weights/retinaface/retinaface_mbnet0.25.onnx")
    for p in [full, *subset]:
        ours = json.loads((out / (p.stem + ".json")).read_text())["faces"]
        ref = official_retinaface_detect(onnx, cv2.imread(str(p)))
        assert_same_faces(as_arrays(ours), ref, box_tol=2e-2, score_tol=2e-5, where=p.name)
