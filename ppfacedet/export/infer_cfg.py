"""``infer_cfg.yml``: everything deploy/python needs to run an exported model.

  model_name     the config's name
  program        the program file (model.json or model.pdmodel); params: model.pdiparams
  input          the InputPolicy settings (policy, target_size, pad_multiple,
                 mean, std, channel_order)
  inputs         the graph's input names: image, plus scale_factor [N,2] (sx, sy)
                 for --with_nms graphs
  outputs        the graph's output names, in graph order
  decode         the head's deploy_config(): kind (retina | distance | yunet) + parameters
  test           score_threshold, nms_threshold, pre_nms_top_k, max_per_image,
                 nms_box_offset (as ppfacedet/postprocess/select.py takes them)
  with_nms       true: the graph already decodes and suppresses (outputs
                 ``dets`` [K, 16] and ``counts`` [N], see export/graph_nms.py);
                 then ``nms_output`` names the 16 columns and says whether
                 the landmark columns are real
  feature_sizes  how each stride's grid follows from the input: cells along an
                 axis = (size + offsets[stride]) // stride (measured, see
                 feature_size_offsets)
  tensorrt       hints for Paddle-TensorRT (min_subgraph_size)
  onnx           the ONNX model beside the program (model.onnx), when one was
                 converted (export/to_onnx.py); deploy/python's onnxruntime
                 and OpenVINO engines run it

The predictor holds nothing model-specific: a new family is a new ``decode``
kind, written here by its head.
"""
import os

import paddle
import yaml

from ..api import TEST_DEFAULTS
from ..core.config import read_section
from ..data.preprocess import INPUT_DEFAULTS

# Convs of these models come in short runs between reshapes; 3 keeps
# TensorRT from building engines for single ops while taking every conv run.
MIN_SUBGRAPH_SIZE = 3


def plain_yaml(value):
    """Config / numpy / tuple values -> plain dicts, lists and scalars for yaml.safe_dump."""
    if isinstance(value, dict):
        return {k: plain_yaml(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_yaml(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    return value


def feature_size_offsets(model):
    """{stride: a} with grid cells = (size + a) // stride along each axis.

    Any chain of stride-2 layers that each round up or down composes to that
    form: floor((floor((x + b0) / 2) + b1) / 2) = floor((x + b0 + 2 b1) / 4),
    and the form repeats with a period of the largest stride. So one probe per
    height in one period pins ``a`` down: a height ``base + r`` (base a multiple
    of the stride) with ``q`` extra cells means q*s - r <= a <= q*s - r + s - 1.
    Heights the model rejects (YuNet's pyramid cannot add odd sizes, which its
    padding to 32 avoids) are skipped.
    """
    strides = [int(s) for s in model.head.strides]
    period = max(strides)
    base = 2 * period
    bounds = {s: [0, s - 1] for s in strides}
    for extra in range(1, period):
        try:
            with paddle.no_grad():
                raw = model(paddle.zeros([1, 3, base + extra, base]))
        except ValueError:  # paddle's broadcast error for a size the pyramid cannot add
            continue
        for stride, (height, _) in zip(strides, raw.feat_sizes):
            q = height - base // stride
            bounds[stride][0] = max(bounds[stride][0], q * stride - extra)
            bounds[stride][1] = min(bounds[stride][1], q * stride - extra + stride - 1)
    offsets = {}
    for stride, (low, high) in bounds.items():
        if low > high:
            raise ValueError(f"the grid at stride {stride} does not follow (size + a) // stride; "
                             "the deploy decoder cannot lay out its anchors")
        offsets[stride] = low
    return offsets


def infer_settings(cfg, model, outputs, with_nms, program_file, has_landmarks=True):
    settings = read_section(cfg, "input", INPUT_DEFAULTS)
    nms_output = {"columns": ["image_index", "score", "x1", "y1", "x2", "y2"]
                  + [f"{axis}{i}" for i in range(5) for axis in "xy"],
                  "landmarks": bool(has_landmarks)}
    return plain_yaml({
        "model_name": cfg.name,
        "program": program_file,
        "params": "model.pdiparams",
        "input": {key: settings[key] for key in INPUT_DEFAULTS},
        "inputs": ["image", "scale_factor"] if with_nms else ["image"],
        "outputs": list(outputs),
        "decode": model.deploy_config(),
        "test": read_section(cfg, "test", TEST_DEFAULTS),
        "feature_sizes": {"rule": "(size + offset) // stride", "offsets": feature_size_offsets(model)},
        "with_nms": bool(with_nms),
        **({"nms_output": nms_output} if with_nms else {}),
        "tensorrt": {"min_subgraph_size": MIN_SUBGRAPH_SIZE},
    })


def write_infer_cfg(folder, cfg, model, outputs, with_nms, program_file, has_landmarks=True):
    return save_infer_cfg(folder, infer_settings(cfg, model, outputs, with_nms, program_file, has_landmarks))


def save_infer_cfg(folder, settings):
    path = os.path.join(folder, "infer_cfg.yml")
    with open(path, "w") as f:
        yaml.safe_dump(settings, f, sort_keys=False, default_flow_style=None)
    return path
