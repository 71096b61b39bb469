"""RetinaFace-mnet0.25 with weights converted from the official checkpoint
gives the raw loc/conf/landms of the official ONNX exports (onnxruntime) on
real photos at their own size, and at 640x640 for the fixed-shape export."""
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
WEIGHTS = DATA / "weights" / "retinaface"
FULL_IMAGE = DATA / "widerface" / "WIDER_val" / "images" / "0--Parade" / "0_Parade_marchingband_1_149.jpg"
SUBSET = DATA / "widerface" / "val_subset_resized416"
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "retinaface_mnet025.yml"
DYNAMIC_ONNX = "retinaface_mbnet0.25.onnx"
FIXED_ONNX = "FaceDetector.onnx"
TOLERANCE = 1e-4

if not WEIGHTS.is_dir():
    pytest.skip("../shared/data not present: official weights are not redistributable", allow_module_level=True)

ort = pytest.importorskip("onnxruntime")
cv2 = pytest.importorskip("cv2")
paddle = pytest.importorskip("paddle")

from ppfacedet.convert.retinaface import RetinaFaceConverter  # noqa: E402
from ppfacedet.core import load_config  # noqa: E402
from ppfacedet.data.preprocess import InputPolicy  # noqa: E402
from ppfacedet.modeling.detector import build_model  # noqa: E402


@pytest.fixture(scope="module")
def policy():
    return InputPolicy.from_config(load_config(CONFIG))


@pytest.fixture(scope="module")
def photos():
    subset = sorted((SUBSET / "images").rglob("*.jpg"))[:2]
    images = [cv2.imread(str(p)) for p in [FULL_IMAGE, *subset]]
    assert all(im is not None for im in images), "could not read the parity photos"
    return images


def converted_model(source):
    model = build_model(load_config(CONFIG))
    model.set_state_dict(RetinaFaceConverter()(model, WEIGHTS / source))
    model.eval()
    return model


@pytest.fixture(scope="module")
def pth_model():
    return converted_model("mobilenet0.25_Final.pth")


def session(name):
    return ort.InferenceSession(str(WEIGHTS / name), providers=["CPUExecutionProvider"])


def max_diffs(model, sess, x):
    """{output name: max abs diff} between the model and the ONNX session."""
    expected = sess.run(None, {sess.get_inputs()[0].name: x})
    with paddle.no_grad():
        got = model.deploy_outputs(model(paddle.to_tensor(x)))
    assert len(got) == len(expected)
    diffs = {}
    for (name, tensor), ref in zip(got, expected):
        assert tuple(tensor.shape) == ref.shape, name
        diffs[name] = float(np.abs(tensor.numpy() - ref).max())
    return diffs


def test_input_is_bgr_minus_official_mean(policy, photos):
    x, meta = policy(photos[0])
    expected = photos[0].astype(np.float32) - np.array([104, 117, 123], np.float32)
    np.testing.assert_array_equal(x, expected.transpose(2, 0, 1))
    assert meta["scale"] == (1.0, 1.0)


def test_output_names_follow_the_dynamic_export(pth_model):
    names = [o.name for o in session(DYNAMIC_ONNX).get_outputs()]
    with paddle.no_grad():
        ours = [name for name, _ in pth_model.deploy_outputs(pth_model(paddle.zeros([1, 3, 64, 64])))]
    # The export calls its landmark output "iou"; it is the LandmarkHead output.
    assert names == ["loc", "conf", "iou"]
    assert ours == ["loc", "conf", "landms"]


def test_pth_weights_match_dynamic_onnx_on_photos(pth_model, policy, photos):
    sess = session(DYNAMIC_ONNX)
    # The full photo is 684x1024: 86->43->22 rows, so the FPN upsamples odd sizes.
    assert photos[0].shape[:2] == (684, 1024)
    for image in photos:
        diffs = max_diffs(pth_model, sess, policy(image)[0][None])
        assert max(diffs.values()) <= TOLERANCE, diffs


def test_pth_weights_match_fixed_640_onnx(pth_model, policy, photos):
    x = policy(cv2.resize(photos[0], (640, 640)))[0][None]
    diffs = max_diffs(pth_model, session(FIXED_ONNX), x)
    assert max(diffs.values()) <= TOLERANCE, diffs


@pytest.mark.parametrize("source", [DYNAMIC_ONNX, FIXED_ONNX])
def test_weights_read_from_onnx_exports_match(source, policy, photos):
    """BN-folded ONNX weights, unfolded again, reproduce the official outputs."""
    model = converted_model(source)
    diffs = max_diffs(model, session(DYNAMIC_ONNX), policy(photos[1])[0][None])
    assert max(diffs.values()) <= TOLERANCE, diffs


def test_decoded_detections_find_faces_on_the_photo(pth_model, policy, photos):
    """End to end: the strongest detections are confident face-sized boxes."""
    x, meta = policy(photos[0])
    with paddle.no_grad():
        raw = pth_model(paddle.to_tensor(x[None]))
    result = pth_model.predict(raw, [meta], {"score_threshold": 0.5, "nms_threshold": 0.4,
                                             "pre_nms_top_k": 5000, "max_per_image": 750})[0]
    assert len(result["scores"]) >= 5
    boxes = result["boxes"]
    assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
    inside = ((result["landmarks"] >= boxes[:, None, :2] - 2) & (result["landmarks"] <= boxes[:, None, 2:] + 2))
    assert inside.all(axis=(1, 2)).mean() > 0.9


def test_module_prefix_and_wrong_backbone():
    from ppfacedet.convert.retinaface import from_state_dict
    from ppfacedet.convert.torch_checkpoint import load_state_dict
    from ppfacedet.core.errors import DataError

    official = load_state_dict(WEIGHTS / "mobilenet0.25_Final.pth")
    assert len(official) == 300
    wrapped = from_state_dict({f"module.{k}": v for k, v in official.items()})
    plain = from_state_dict(official)
    assert wrapped.keys() == plain.keys()
    r50 = build_model(load_config(CONFIG.parent / "retinaface_r50.yml"))
    with pytest.raises(DataError, match="backbone.conv1.weight"):
        RetinaFaceConverter()(r50, WEIGHTS / "mobilenet0.25_Final.pth")
