"""tools/compare.py: one network run two ways (ppfacedet config + converted
weights, and the official ONNX by onnxruntime) scores and measures the same."""
import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
WEIGHTS = DATA / "weights"
SUBSET = DATA / "widerface" / "val_subset_resized416"
NUM_IMAGES = 10

requires_data = pytest.mark.skipif(not WEIGHTS.is_dir(),
                                   reason="../shared/data not present: official weights are not redistributable")
pytest.importorskip("onnxruntime")

from ppfacedet.compare import metrics  # noqa: E402
from ppfacedet.compare.runners import OnnxRunner, Protocol, build_runner  # noqa: E402
from ppfacedet.core.errors import PPFaceDetError  # noqa: E402
from detections import assert_same_faces  # noqa: E402


@pytest.fixture(scope="module")
def compare_run(tmp_path_factory):
    """The tool on YuNet-n both ways: (output folder, CSV rows by model name)."""
    out = tmp_path_factory.mktemp("compare")
    cmd = [sys.executable, str(ROOT / "tools" / "compare.py"),
           "--models", f"ours=configs/yunet_n.yml:{WEIGHTS / 'yunet' / 'yunet_n.pth'}",
           f"official={WEIGHTS / 'yunet' / 'yunet_n_dynamic.onnx'}",
           "--image_dir", str(SUBSET / "images"), "--gt_dir", str(SUBSET / "ground_truth"),
           "--max_images", str(NUM_IMAGES), "--repeats", "3", "--warmup", "1", "--output", str(out),
           "--no_progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=str(ROOT),
                          env={**os.environ, "FLAGS_call_stack_level": "0"})
    assert done.returncode == 0, done.stderr[-2000:]
    with open(out / "compare.csv") as f:
        rows = {r["model"]: r for r in csv.DictReader(f)}
    return out, rows


@requires_data
def test_same_network_two_ways_scores_and_measures_the_same(compare_run):
    _, rows = compare_run
    ours, official = rows["ours"], rows["official"]
    for setting in ("ap_easy", "ap_medium", "ap_hard"):
        assert abs(float(ours[setting]) - float(official[setting])) <= 1e-3, setting
    assert float(ours["ap_easy"]) > 0.3  # real detections, not two empty runs agreeing
    assert int(ours["params"]) == int(official["params"])
    assert int(ours["train_params"]) == 75856 and official["train_params"] == ""
    assert abs(float(ours["mflops"]) / float(official["mflops"]) - 1) <= 0.01
    assert float(ours["fps"]) > 0 and float(official["fps"]) > 0


@requires_data
def test_markdown_and_csv_have_the_expected_columns(compare_run):
    out, rows = compare_run
    with open(out / "compare.csv") as f:
        header = next(csv.reader(f))
    assert header == ["model", "kind", "ap_easy", "ap_medium", "ap_hard", "params", "train_params", "mflops", "fps"]
    assert rows["official"]["kind"] == "onnxruntime (yunet)"
    lines = (out / "compare.md").read_text().splitlines()
    assert lines[0] == ("| Model | Run by | AP easy | AP medium | AP hard | Params (BN folded) | Params (training) "
                        "| MFLOPs (MACs) @320x320 | FPS @320x320 |")
    assert sum(line.startswith(("| ours |", "| official |")) for line in lines) == 2
    assert any(f"{NUM_IMAGES} images" in line for line in lines)


@requires_data
@pytest.mark.parametrize("config,weights,onnx_file", [
    ("scrfd_500m_kps", "scrfd/scrfd_500m_bnkps.onnx", "scrfd/scrfd_500m_bnkps.onnx"),
    ("retinaface_mnet025", "retinaface/mobilenet0.25_Final.pth", "retinaface/retinaface_mbnet0.25.onnx"),
])
def test_official_decoders_match_the_ppfacedet_models(config, weights, onnx_file):
    """The SCRFD and RetinaFace ONNX runners (official preprocessing and decode)
    give the detections of the same weights run by ppfacedet."""
    import cv2
    protocol = Protocol()
    _, ours = build_runner(f"configs/{config}.yml:{WEIGHTS / weights}", protocol, 0.02, 0.45)
    official = OnnxRunner(WEIGHTS / onnx_file, protocol, 0.02, 0.45)
    image = cv2.imread(str(sorted((SUBSET / "images").rglob("*.jpg"))[0]))
    a, b = ours.detect(image), official.detect(image)
    assert len(a["scores"]) > 0
    assert_same_faces(a, b, box_tol=1e-2, score_tol=1e-4)


def _toy_onnx(path, output_names):
    """A 1x1 conv whose outputs carry the given names."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    weight = numpy_helper.from_array(np.ones((1, 3, 1, 1), np.float32), "w")
    nodes = [helper.make_node("Conv", ["input", "w"], [name]) for name in output_names]
    graph = helper.make_graph(
        nodes, "toy", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, None, None])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 1, None, None]) for n in output_names],
        [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]), str(path))


@requires_data
def test_unknown_onnx_layout_is_a_clear_error(tmp_path):
    _toy_onnx(tmp_path / "toy.onnx", ["out0", "out1"])
    with pytest.raises(PPFaceDetError, match=r"unknown ONNX output layout \(out0.*Known: YuNet"):
        OnnxRunner(tmp_path / "toy.onnx", Protocol(), 0.02, 0.45)
    # The 2022 YuNet reuses RetinaFace's output names with other widths (14/2/1).
    with pytest.raises(PPFaceDetError, match="loc.*14"):
        OnnxRunner(WEIGHTS / "yunet" / "face_detection_yunet_2022mar.onnx", Protocol(), 0.02, 0.45)


def test_bad_model_spec_names_the_expected_forms():
    with pytest.raises(PPFaceDetError, match="CONFIG.yml:WEIGHTS"):
        build_runner("configs/yunet_n.yml", Protocol(), 0.02, 0.45)


def test_params_and_macs_conventions_hand_computed(tmp_path):
    """conv3x3 (no bias) + BN + ReLU + conv1x1 (bias) on 3 x 8 x 8, and the same
    network as an ONNX export would store it (BN folded into a conv bias)."""
    import onnx
    import paddle.nn as nn
    from onnx import TensorProto, helper, numpy_helper
    model = nn.Sequential(nn.Conv2D(3, 4, 3, bias_attr=False), nn.BatchNorm2D(4), nn.ReLU(), nn.Conv2D(4, 2, 1))
    # training: 4*3*3*3 + BN 2*4 + 2*4 + 2 = 126; folded: 108 + 4 (new bias) + 10 = 122
    assert metrics.paddle_params(model) == {"params": 122, "train_params": 126}
    macs = 6 * 6 * 4 * 27 + 6 * 6 * 2 * 4  # 8x8 input, no padding: 6x6 outputs
    assert metrics.paddle_macs(model, 8) == macs

    init = [numpy_helper.from_array(np.ones(shape, np.float32), name) for name, shape in
            [("w1", (4, 3, 3, 3)), ("b1", (4,)), ("w2", (2, 4, 1, 1)), ("b2", (2,))]]
    init.append(numpy_helper.from_array(np.array([1, -1], np.int64), "shape"))  # not a parameter
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"]), helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"]),
             helper.make_node("Reshape", ["c2", "shape"], ["out"])]
    graph = helper.make_graph(nodes, "folded", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                              [None, 3, None, None])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], init)
    path = tmp_path / "folded.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]), str(path))
    assert metrics.onnx_params(path) == {"params": 122, "train_params": None}
    assert metrics.onnx_macs(path, 8) == macs
