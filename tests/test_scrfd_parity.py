"""Raw outputs of our SCRFD models, with weights imported from the official
ONNX releases, equal those of the ONNX files run by onnxruntime."""
from pathlib import Path

import cv2
import numpy as np
import paddle
import pytest

from ppfacedet.convert.scrfd import SCRFDConverter
from ppfacedet.core import load_config
from ppfacedet.data.preprocess import InputPolicy
from ppfacedet.modeling.detector import build_model

ort = pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
WEIGHTS = DATA / "weights" / "scrfd"
WIDER = DATA / "widerface"
PHOTOS = [
    WIDER / "WIDER_val/images/0--Parade/0_Parade_marchingband_1_149.jpg",
    WIDER / "val_subset_resized416/images/2--Demonstration/2_Demonstration_Political_Rally_2_219.jpg",
    WIDER / "val_subset_resized416/images/2--Demonstration/2_Demonstration_Demonstrators_2_666.jpg",
]
# (our config, official ONNX, whether its input size is free)
CASES = [
    ("scrfd_500m", "scrfd_500m.onnx", True),
    ("scrfd_1g", "scrfd_1g.onnx", True),
    ("scrfd_2.5g", "scrfd_2.5g.onnx", True),
    ("scrfd_500m_kps", "scrfd_500m_bnkps.onnx", True),
    ("scrfd_2.5g_kps", "scrfd_2.5g_kps.onnx", False),
]
TOLERANCE = 1e-4

if not DATA.is_dir():
    pytest.skip("../shared/data not present: official weights are not redistributable", allow_module_level=True)


def load_pair(config_name, onnx_name):
    cfg = load_config(ROOT / "configs" / f"{config_name}.yml")
    model = build_model(cfg)
    weights = SCRFDConverter()(model, str(WEIGHTS / onnx_name))
    model.set_state_dict({k: paddle.to_tensor(v) for k, v in weights.items()})
    model.eval()
    session = ort.InferenceSession(str(WEIGHTS / onnx_name), providers=["CPUExecutionProvider"])
    return cfg, model, session


def compare(model, session, batch):
    """Max abs difference per output, matched in the official output order."""
    expected = session.run(None, {session.get_inputs()[0].name: batch})
    with paddle.no_grad():
        ours = model.deploy_outputs(model(paddle.to_tensor(batch)))
    assert len(ours) == len(expected)
    diffs = {}
    for (name, tensor), ref in zip(ours, expected):
        # Older exports drop the batch axis ([HWA, C]); the rows are the same.
        got = tensor.numpy().reshape(ref.shape)
        diffs[name] = float(np.abs(got - ref).max())
    return diffs


@pytest.mark.parametrize("config_name,onnx_name,dynamic", CASES, ids=[c[0] for c in CASES])
def test_raw_outputs_match_official_onnx(config_name, onnx_name, dynamic):
    cfg, model, session = load_pair(config_name, onnx_name)
    policy = InputPolicy.from_config(cfg)
    for photo in PHOTOS:
        image = cv2.imread(str(photo))
        assert image is not None, photo
        batch = policy(image)[0][None]
        diffs = compare(model, session, batch)
        assert max(diffs.values()) <= TOLERANCE, (photo.name, diffs)
    names = [name for name, _ in model.deploy_outputs(model(paddle.to_tensor(batch)))]
    kinds = ["score", "bbox", "kps"] if model.head.use_kps else ["score", "bbox"]
    assert names == [f"{k}_{s}" for k in kinds for s in (8, 16, 32)]


@pytest.mark.parametrize("config_name,onnx_name", [("scrfd_500m_kps", "scrfd_500m_bnkps.onnx"),
                                                   ("scrfd_2.5g", "scrfd_2.5g.onnx")])
def test_odd_sized_input_matches_official_onnx(config_name, onnx_name):
    """A 360x400 input gives odd coarse maps (45 -> 23 -> 12 for the ResNet
    trunk), so the top-down upsampling must crop exactly as ONNX Resize does."""
    cfg, model, session = load_pair(config_name, onnx_name)
    policy = InputPolicy.from_config(cfg)
    image = cv2.imread(str(PHOTOS[1]))[:360, :400]
    batch = policy.normalize(image)[None]
    diffs = compare(model, session, batch)
    assert max(diffs.values()) <= TOLERANCE, diffs
