"""Official RetinaFace weights (biubug6/Pytorch_Retinaface) -> this model.

Two kinds of source are read:
  * the ``.pth`` checkpoints (``mobilenet0.25_Final.pth``, ``Resnet50_Final.pth``):
    names map by prefix (``body.`` -> ``backbone.``, ``fpn.``/``ssh*`` -> ``neck.``,
    heads -> ``head.``) and BN buffer renames;
  * the ONNX exports (``FaceDetector.onnx``, ``retinaface_mbnet0.25.onnx``):
    the heads keep their names, but every other conv has its BN folded in and
    an anonymous name. Those convs are taken in graph order, which is the
    order the official forward runs them; our backbone and neck run theirs in
    the same order, recorded with hooks on a small dummy input, and every
    pairing is checked by shape. Each folded conv becomes conv + a BN with
    identity statistics (``unfold_batchnorm``).
"""
import re

import numpy as np
import paddle.nn as nn

from ..core.errors import DataError
from ..core.registry import CONVERTERS
from .onnx_weights import conv_weights, initializers, load_onnx, unfold_batchnorm
from .run_order import layers_in_run_order
from .torch_checkpoint import load_state_dict

_PREFIXES = (("body.", "backbone."), ("fpn.", "neck."), ("ssh", "neck.ssh"), ("ClassHead.", "head.ClassHead."),
             ("BboxHead.", "head.BboxHead."), ("LandmarkHead.", "head.LandmarkHead."))
_BUFFERS = {"running_mean": "_mean", "running_var": "_variance"}
_HEAD_WEIGHT = re.compile(r"^(ClassHead|BboxHead|LandmarkHead)\.\d+\.conv1x1\.(weight|bias)$")


def paddle_name(official):
    """Paddle parameter name for an official one, or None if it has no counterpart."""
    name = official[len("module."):] if official.startswith("module.") else official
    if name.endswith("num_batches_tracked"):
        return None
    for old, new in _PREFIXES:
        if name.startswith(old):
            name = new + name[len(old):]
            break
    else:
        return None
    stem, _, leaf = name.rpartition(".")
    return f"{stem}.{_BUFFERS.get(leaf, leaf)}"


def from_state_dict(official):
    out, unknown = {}, []
    for key, value in official.items():
        name = paddle_name(key)
        if name is None:
            if not key.endswith("num_batches_tracked"):
                unknown.append(key)
            continue
        out[name] = value
    if unknown:
        raise DataError(f"RetinaFace checkpoint has keys outside body/fpn/ssh/heads, e.g. {unknown[:5]}")
    return out


def conv_bn_run_order(model):
    """[(conv name, bn name)] of the backbone and neck, in execution order."""
    order = layers_in_run_order(model, (nn.Conv2D, nn.BatchNorm2D), skip_prefix="head.")
    pairs = []
    for (conv, conv_layer), (bn, bn_layer) in zip(order[::2], order[1::2]):
        if not (isinstance(conv_layer, nn.Conv2D) and isinstance(bn_layer, nn.BatchNorm2D)):
            raise DataError(f"expected every conv to be followed by its BatchNorm, got {conv} then {bn}")
        pairs.append((conv, bn))
    return pairs


def from_onnx(model, path):
    graph = load_onnx(path)
    out = {paddle_name(k): v for k, v in initializers(graph).items() if _HEAD_WEIGHT.match(k)}
    folded = [(node, w, b) for node, w, b in conv_weights(graph) if not _HEAD_WEIGHT.match(node.input[1])]
    pairs = conv_bn_run_order(model)
    if len(folded) != len(pairs):
        raise DataError(f"{path}: {len(folded)} BN-folded convs, but the model has {len(pairs)} conv+BN pairs "
                        f"(is the config the mobilenet0.25 one?)")
    params = model.state_dict()
    for (node, weight, bias), (conv, bn) in zip(folded, pairs):
        expected = tuple(params[f"{conv}.weight"].shape)
        if tuple(weight.shape) != expected:
            raise DataError(f"{path}: conv {node.name} has weight {tuple(weight.shape)}, but {conv} "
                            f"expects {expected}")
        out[f"{conv}.weight"], bn_params = unfold_batchnorm(weight, bias)
        out.update({f"{bn}.{k}": v for k, v in bn_params.items()})
    return out


@CONVERTERS.register
class RetinaFaceConverter:
    def __call__(self, model, src_path):
        path = str(src_path)
        weights = from_onnx(model, path) if path.endswith(".onnx") else from_state_dict(load_state_dict(path))
        return check_complete(model, weights, path)


def check_complete(model, weights, path):
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise DataError(f"{path} does not fit this model: missing {missing[:5]} ({len(missing)}), "
                        f"unexpected {unexpected[:5]} ({len(unexpected)}); "
                        f"check that the config's backbone matches the checkpoint")
    for name, shape in expected.items():
        if tuple(weights[name].shape) != shape:
            raise DataError(f"{path}: {name} has shape {tuple(weights[name].shape)}, the model expects {shape}")
    return {k: np.asarray(v, np.float32) for k, v in weights.items()}
