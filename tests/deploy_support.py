"""Models, photos and exports shared by the export / deploy / ONNX tests.

Each family is built (with its official weights converted when ../shared/data
is present, else a seeded random init) and exported at most once per pytest
process: the exports are cached in one temporary folder removed at exit.
"""
import atexit
import functools
import os
import shutil
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import paddle

from ppfacedet.core import load_config
from ppfacedet.modeling.detector import build_model

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DEPLOY = ROOT / "deploy" / "python"
WIDER = DATA / "widerface"
PHOTOS = [WIDER / "WIDER_val/images/0--Parade/0_Parade_marchingband_1_149.jpg",
          WIDER / "val_subset_resized416/images/2--Demonstration/2_Demonstration_Political_Rally_2_219.jpg"]
# config -> official weights under ../shared/data/weights (None: random init)
FAMILIES = {
    "retinaface_mnet025": "retinaface/mobilenet0.25_Final.pth",
    "scrfd_500m_kps": "scrfd/scrfd_500m_bnkps.onnx",
    "scrfd_2.5g": "scrfd/scrfd_2.5g.onnx",
    "yunet_n": "yunet/yunet_n.pth",
    "damofd_0.5g": None,
}
FAMILY_NAMES = [name for name in FAMILIES if (ROOT / "configs" / f"{name}.yml").is_file()]

_WORK = tempfile.mkdtemp(prefix="ppfacedet_deploy_tests_")
atexit.register(shutil.rmtree, _WORK, ignore_errors=True)

if str(DEPLOY) not in sys.path:
    sys.path.insert(0, str(DEPLOY))


def work_dir(*parts):
    path = os.path.join(_WORK, *parts)
    os.makedirs(path, exist_ok=True)
    return path


@functools.lru_cache(maxsize=None)
def family(name):
    """(cfg, model in eval mode, whether the weights are the official ones)."""
    cfg = load_config(str(ROOT / "configs" / f"{name}.yml"))
    src = FAMILIES[name] and DATA / "weights" / FAMILIES[name]
    if src and src.is_file():
        from ppfacedet.convert.apply import convert_official_weights
        model, _ = convert_official_weights(cfg, str(src))
        official = True
    else:
        paddle.seed(0)
        model, official = build_model(cfg), False
    model.eval()
    return cfg, model, official


@functools.lru_cache(maxsize=None)
def exported(name, with_nms=False, program_format="pir"):
    """The export folder of a family (made once per process)."""
    from ppfacedet.export.static import export_inference_model
    cfg, model, _ = family(name)
    out = work_dir(f"{program_format}{'_nms' if with_nms else ''}")
    return export_inference_model(cfg, model, out, with_nms=with_nms, program_format=program_format)


@functools.lru_cache(maxsize=None)
def photos():
    """Two BGR photos of different sizes: WIDER val images when present, else synthetic."""
    if all(p.is_file() for p in PHOTOS):
        return tuple(cv2.imread(str(p)) for p in PHOTOS)
    rng = np.random.RandomState(0)
    return tuple(rng.randint(0, 256, size, dtype=np.uint8) for size in [(300, 452, 3), (256, 256, 3)])


def dygraph_outputs(model, batch):
    with paddle.no_grad():
        return [t.numpy() for _, t in model.deploy_outputs(model(paddle.to_tensor(batch)))]


def run_program(folder, batch, enable_mkldnn=False):
    """Run an exported program through the deploy predictor -> list of arrays in graph order."""
    from predictor import Predictor, load_infer_cfg
    info = load_infer_cfg(folder)
    predictor = Predictor(folder, info, enable_mkldnn=enable_mkldnn, cpu_threads=1)
    outputs = predictor(batch)
    return [outputs[name] for name in info["outputs"]]


@functools.lru_cache(maxsize=None)
def exported_with_onnx(name):
    """A copy of the family's export folder with model.onnx converted into it
    (named in its infer_cfg.yml), for the onnxruntime and OpenVINO engines."""
    from ppfacedet.export.to_onnx import convert_to_onnx
    folder = os.path.join(work_dir("with_onnx"), name)
    shutil.copytree(exported(name), folder)
    convert_to_onnx(folder)
    return folder
