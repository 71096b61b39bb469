"""YuNet-n/s converted from the official weights reproduce the official
dynamic-shape ONNX (onnxruntime) on real photos padded to a multiple of 32."""
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
WEIGHTS = DATA / "weights" / "yunet"
FULL_IMAGE = DATA / "widerface" / "WIDER_val" / "images" / "0--Parade" / "0_Parade_marchingband_1_149.jpg"
SUBSET = DATA / "widerface" / "val_subset_resized416"
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TOLERANCE = 1e-4

if not WEIGHTS.is_dir():
    pytest.skip("../shared/data not present: official weights are not redistributable", allow_module_level=True)

ort = pytest.importorskip("onnxruntime")
cv2 = pytest.importorskip("cv2")
paddle = pytest.importorskip("paddle")

from ppfacedet.convert.yunet import YuNetConverter  # noqa: E402
from ppfacedet.core import load_config  # noqa: E402
from ppfacedet.data.preprocess import InputPolicy  # noqa: E402
from ppfacedet.modeling.detector import build_model  # noqa: E402
from official_yunet import official_detections  # noqa: E402
from detections import assert_same_faces  # noqa: E402


def _inputs():
    """Network inputs under the config's input policy (raw BGR, padded to 32)."""
    policy = InputPolicy.from_config(load_config(CONFIGS / "yunet_n.yml"))
    subset = sorted((SUBSET / "images").rglob("*.jpg"))[:2]
    images = [cv2.imread(str(p)) for p in [FULL_IMAGE, *subset]]
    assert all(im is not None for im in images), "could not read the parity photos"
    return [policy(im)[0][None] for im in images]


@pytest.fixture(scope="module")
def inputs():
    return _inputs()


def _model(variant, weights):
    model = build_model(load_config(CONFIGS / f"yunet_{variant}.yml"))
    model.set_state_dict(YuNetConverter()(model, WEIGHTS / weights))
    model.eval()
    return model


def _max_diff(model, session, x):
    names = [o.name for o in session.get_outputs()]
    expected = session.run(None, {session.get_inputs()[0].name: x})
    with paddle.no_grad():
        got = model.deploy_outputs(model(paddle.to_tensor(x)))
    assert [name for name, _ in got] == names
    diffs = []
    for (name, tensor), ref in zip(got, expected):
        assert tuple(tensor.shape) == ref.shape, name
        diffs.append(float(np.abs(tensor.numpy() - ref).max()))
    return max(diffs)


@pytest.mark.parametrize("variant", ["n", "s"])
def test_pth_weights_match_official_onnx(variant, inputs):
    session = ort.InferenceSession(str(WEIGHTS / f"yunet_{variant}_dynamic.onnx"),
                                   providers=["CPUExecutionProvider"])
    model = _model(variant, f"yunet_{variant}.pth")
    assert inputs[0].shape[2] % 32 == 0 and inputs[0].shape[3] % 32 == 0
    for x in inputs:
        assert _max_diff(model, session, x) <= TOLERANCE


@pytest.mark.parametrize("variant,onnx_file", [
    ("n", "yunet_n_dynamic.onnx"), ("s", "yunet_s_dynamic.onnx"),
    ("n", "yunet_n_320_320.onnx"), ("s", "yunet_s_640_640.onnx"),
    ("s", "face_detection_yunet_2023mar.onnx"),  # OpenCV Zoo's copy of yunet_s_640_640
])
def test_onnx_weights_match_official_onnx(variant, onnx_file, inputs):
    """Weights read back out of an ONNX export (BN folded) give the same outputs."""
    session = ort.InferenceSession(str(WEIGHTS / f"yunet_{variant}_dynamic.onnx"),
                                   providers=["CPUExecutionProvider"])
    model = _model(variant, onnx_file)
    assert _max_diff(model, session, inputs[1]) <= TOLERANCE


def test_converter_rejects_the_other_variant():
    from ppfacedet.core.errors import DataError
    model = build_model(load_config(CONFIGS / "yunet_s.yml"))
    with pytest.raises(DataError, match="does not fit"):
        YuNetConverter()(model, WEIGHTS / "yunet_n.pth")


@pytest.mark.parametrize("variant", ["n", "s"])
def test_detections_match_official_protocol(variant, inputs):
    cfg = load_config(CONFIGS / f"yunet_{variant}.yml")
    test_cfg = dict(cfg["test"])
    x = inputs[0]
    session = ort.InferenceSession(str(WEIGHTS / f"yunet_{variant}_dynamic.onnx"),
                                   providers=["CPUExecutionProvider"])
    outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"input": x})))
    ref_boxes, ref_scores = official_detections(outputs, x.shape[2], x.shape[3],
                                                 test_cfg["score_threshold"], test_cfg["nms_threshold"])
    model = _model(variant, f"yunet_{variant}.pth")
    with paddle.no_grad():
        dets = model.predict(model(paddle.to_tensor(x)), [{"scale": (1.0, 1.0)}], test_cfg)[0]
    assert len(ref_scores) > 0
    assert_same_faces(dets, {"boxes": ref_boxes, "scores": ref_scores}, box_tol=1e-3, score_tol=1e-4)
