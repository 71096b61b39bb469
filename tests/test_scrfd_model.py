"""SCRFD family: configs build, sizes match the published table, outputs are
shaped and decoded as the official code does, and weights import by name."""
import math
from pathlib import Path

import numpy as np
import paddle
import pytest

from ppfacedet.convert.scrfd import SCRFDConverter
from ppfacedet.core import load_config
from ppfacedet.modeling.detector import build_model
from ppfacedet.modeling.heads.scrfd_head import SCRFDHead

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = Path(__file__).resolve().parents[2] / "shared" / "data" / "weights" / "scrfd"

# Published parameter counts (millions), insightface detection/scrfd README.
PUBLISHED_PARAMS = {
    "scrfd_500m": 0.57, "scrfd_1g": 0.64, "scrfd_2.5g": 0.67, "scrfd_10g": 3.86, "scrfd_34g": 9.80,
    "scrfd_2.5g_kps": 0.82, "scrfd_10g_kps": 4.23,
}
# scrfd_500m_kps is left out: the README repeats 500M's 0.57, but the official
# scrfd_500m_bnkps export alone holds 0.626M weights (BN folded) because it adds
# keypoint convs and unshared per-stride heads; its structure is checked by the
# ONNX import and parity tests instead.
ALL_CONFIGS = sorted(list(PUBLISHED_PARAMS) + ["scrfd_500m_kps"])


def build(name):
    return build_model(load_config(ROOT / "configs" / f"{name}.yml"))


def count_params(model):
    """Trainable parameters (paddle also lists BN running statistics as parameters)."""
    return sum(int(np.prod(p.shape)) for p in model.parameters() if not p.stop_gradient)


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_param_count_matches_published_table(name):
    millions = count_params(build(name)) / 1e6
    assert abs(millions - PUBLISHED_PARAMS[name]) / PUBLISHED_PARAMS[name] <= 0.03, millions


# Published FLOPs at VGA (640x480), in GFLOPs.
PUBLISHED_GFLOPS = {"scrfd_500m": 0.508, "scrfd_1g": 1.0, "scrfd_2.5g": 2.53, "scrfd_10g": 9.98,
                    "scrfd_34g": 34.13}


@pytest.mark.parametrize("name", sorted(PUBLISHED_GFLOPS))
def test_flops_at_vga_match_published_table(name):
    flops = pytest.importorskip("ppfacedet.modeling.flops")
    gflops = flops.count_flops(build(name), [1, 3, 480, 640]) / 1e9
    assert abs(gflops - PUBLISHED_GFLOPS[name]) / PUBLISHED_GFLOPS[name] <= 0.03, gflops


@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_every_config_builds_and_outputs_per_stride_tensors(name):
    model = build(name)
    model.eval()
    h, w = 64, 96
    with paddle.no_grad():
        raw = model(paddle.zeros([2, 3, h, w]))
    kinds = {"cls": 1, "box": 4, "kps": 10} if model.head.use_kps else {"cls": 1, "box": 4}
    assert list(raw) == [f"{k}_{s}" for k in kinds for s in (8, 16, 32)]
    for key, tensor in raw.items():
        kind, stride = key.split("_")
        stride = int(stride)
        rows = math.ceil(h / stride) * math.ceil(w / stride) * 2
        assert tuple(tensor.shape) == (2, rows, kinds[kind]), key
    cfg = model.deploy_config()
    assert cfg == {"kind": "distance", "strides": [8, 16, 32], "num_anchors": 2, "offset": 0.0,
                   "score_activation": "none", "has_kps": model.head.use_kps}


def tiny_head():
    head = SCRFDHead(in_channels=4, feat_channels=8, stacked_convs=1, norm="BN", strides_share=False,
                     use_kps=True)
    head.eval()
    feats = [paddle.zeros([1, 4, 2, 3]), paddle.zeros([1, 4, 1, 2]), paddle.zeros([1, 4, 1, 1])]
    with paddle.no_grad():
        raw = head(feats)
    return head, raw


def test_decode_places_distances_around_offset_zero_centres():
    head, raw = tiny_head()
    # stride 8 map is 2 rows x 3 cols x 2 anchors; row index = (y * 3 + x) * 2 + anchor.
    row = (1 * 3 + 2) * 2 + 1  # y=1, x=2, second anchor: centre (16, 8)
    box = np.zeros(raw["box_8"].shape, np.float32)
    box[0, row] = [1, 2, 3, 4]
    kps = np.zeros(raw["kps_8"].shape, np.float32)
    kps[0, row] = [0.5, -1, 0, 0, 0, 0, 0, 0, 2, 1]
    cls = np.zeros(raw["cls_8"].shape, np.float32)
    cls[0, row] = 2.0
    raw["box_8"], raw["kps_8"], raw["cls_8"] = (paddle.to_tensor(a) for a in (box, kps, cls))
    boxes, scores, landmarks = head.decode(raw)
    assert boxes.shape == [1, 12 + 4 + 2, 4]
    np.testing.assert_allclose(boxes[0, row].numpy(), [16 - 8, 8 - 16, 16 + 24, 8 + 32])
    np.testing.assert_allclose(scores[0, row].numpy(), 1 / (1 + np.exp(-2.0)), rtol=1e-6)
    np.testing.assert_allclose(landmarks[0, row].numpy(), [20, 0, 16, 8, 16, 8, 16, 8, 32, 16])
    # First anchor of stride 16 (row 12): centre (0, 0), zero distances.
    np.testing.assert_allclose(boxes[0, 12].numpy(), [0, 0, 0, 0])
    outs = head.deploy_outputs(raw)
    np.testing.assert_allclose(outs[3][1].numpy(), box)  # bbox_8 stays in stride units


def official_name(ours):
    """Our parameter name -> the official mmdet name (for building fake checkpoints)."""
    name = ours.replace("head.", "bbox_head.", 1) if ours.startswith("head.") else ours
    for stride in (8, 16, 32):
        name = name.replace(f".{stride}.", f".({stride}, {stride}).")
    return name.replace("._mean", ".running_mean").replace("._variance", ".running_var")


@pytest.mark.parametrize("name", ["scrfd_2.5g_kps", "scrfd_500m"])
def test_checkpoint_import_maps_official_names(name):
    model = build(name)
    rng = np.random.default_rng(0)
    fake = {}
    for key, value in model.state_dict().items():
        fake[official_name(key)] = rng.standard_normal(value.shape).astype(np.float32)
        if key.endswith("._mean"):
            fake[official_name(key).replace("running_mean", "num_batches_tracked")] = np.array(7, np.int64)
    weights = SCRFDConverter()(model, fake)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(weights[key], fake[official_name(key)])
    bad = dict(fake)
    bad.pop(next(iter(bad)))
    with pytest.raises(Exception, match="no weights for 1 model entries"):
        SCRFDConverter()(model, bad)


@pytest.mark.parametrize("name,onnx_name", [("scrfd_500m", "scrfd_500m.onnx"),
                                            ("scrfd_2.5g_kps", "scrfd_2.5g_kps.onnx")])
def test_onnx_names_are_official_checkpoint_names(name, onnx_name):
    """The ONNX exports keep the official names of unfolded weights (neck, GN
    heads, output convs, scales); each maps onto one of our entries of the same shape."""
    if not WEIGHTS.is_dir():
        pytest.skip("../shared/data not present: official weights are not redistributable")
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper
    state = {k: tuple(v.shape) for k, v in build(name).state_dict().items()}
    named = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(WEIGHTS / onnx_name)).graph.initializer
             if t.name.startswith(("neck.", "bbox_head."))}
    assert len(named) >= 10
    for key, value in named.items():
        ours = SCRFDConverter.official_to_ours(key)
        assert ours in state, key
        assert int(np.prod(state[ours])) == value.size, key


def test_onnx_import_round_trips_through_state_dict():
    if not WEIGHTS.is_dir():
        pytest.skip("../shared/data not present: official weights are not redistributable")
    model = build("scrfd_500m_kps")
    weights = SCRFDConverter()(model, str(WEIGHTS / "scrfd_500m_bnkps.onnx"))
    assert set(weights) == set(model.state_dict())
    model.set_state_dict({k: paddle.to_tensor(v) for k, v in weights.items()})
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), weights[key])
    with pytest.raises(Exception, match="Conv nodes"):
        SCRFDConverter()(build("scrfd_1g"), str(WEIGHTS / "scrfd_500m.onnx"))
