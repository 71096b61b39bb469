"""Official YuNet weights (libfacedetection.train) -> ppfacedet parameter names.

Two sources:
  * ``.pth`` checkpoints: layer names are the official ones except for the
    head prefix (``bbox_head.`` -> ``head.``) and BN buffer names;
  * ``.onnx`` exports (dynamic or fixed size): convs that had no BN keep their
    official initializer names; convs with BN folded in have anonymous
    initializers and are recognised from the graph: the depthwise conv of a
    ConvDPUnit reads the output of that unit's named 1x1 conv, and the stem conv
    reads the graph input. Folded BNs are unfolded into an identity BN.
"""
import os

import numpy as np

from ..core.errors import DataError
from ..core.registry import CONVERTERS
from .onnx_weights import conv_weights, load_onnx, unfold_batchnorm
from .torch_checkpoint import load_state_dict

_PREFIXES = (("head.", "bbox_head."),)
_BN_BUFFERS = (("._mean", ".running_mean"), ("._variance", ".running_var"))
_STEM = "backbone.model0"


def official_name(paddle_name):
    """The libfacedetection.train state-dict key of a ppfacedet YuNet key."""
    name = paddle_name
    for ours, theirs in _PREFIXES:
        if name.startswith(ours):
            name = theirs + name[len(ours):]
    for ours, theirs in _BN_BUFFERS:
        if name.endswith(ours):
            name = name[:-len(ours)] + theirs
    return name


@CONVERTERS.register
class YuNetConverter:
    def __call__(self, model, src_path):
        ext = os.path.splitext(str(src_path))[1].lower()
        if ext in (".pth", ".pt"):
            official = load_state_dict(src_path)
        elif ext == ".onnx":
            official = self.onnx_state_dict(src_path)
        else:
            raise DataError(f"{src_path}: unknown weight format '{ext}'; YuNetConverter reads .pth, .pt or .onnx")
        return self._to_paddle(model, official, src_path)

    @staticmethod
    def _to_paddle(model, official, src_path):
        out, missing, mismatched = {}, [], []
        for name, param in model.state_dict().items():
            key = official_name(name)
            if key not in official:
                missing.append(key)
                continue
            value = np.asarray(official[key], np.float32)
            if tuple(value.shape) != tuple(param.shape):
                mismatched.append(f"{key}: source {tuple(value.shape)} vs model {tuple(param.shape)}")
                continue
            out[name] = value
        if missing or mismatched:
            raise DataError(f"{src_path}: does not fit this YuNet model (the other of yunet_n/yunet_s, or "
                            f"not a libfacedetection.train YuNet); "
                            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}; "
                            f"shape mismatches {mismatched[:5]}")
        return out

    @staticmethod
    def onnx_state_dict(path):
        """Official-named state dict rebuilt from an ONNX export."""
        onnx_model = load_onnx(path)
        graph = onnx_model.graph
        producer = {out: node for node in graph.node for out in node.output}
        inputs = {i.name for i in graph.input}
        state = {}
        for node, weight, bias in conv_weights(onnx_model):
            weight_name = node.input[1]
            if weight_name.endswith(".weight"):
                conv = weight_name[:-len(".weight")]
                state[f"{conv}.weight"] = weight
                if bias is not None:
                    state[f"{conv}.bias"] = bias
                continue
            conv, bn = _folded_conv_names(node, producer, inputs, path)
            weight, bn_params = unfold_batchnorm(weight, bias)
            state[f"{conv}.weight"] = weight
            state[f"{conv}.bias"] = np.zeros(weight.shape[0], np.float32)
            state[f"{bn}.weight"] = bn_params["weight"]
            state[f"{bn}.bias"] = bn_params["bias"]
            state[f"{bn}.running_mean"] = bn_params["_mean"]
            state[f"{bn}.running_var"] = bn_params["_variance"]
        return state


def _folded_conv_names(node, producer, graph_inputs, path):
    """(conv, bn) official names for a conv whose BN was folded at export."""
    source = node.input[0]
    if source in graph_inputs:
        return f"{_STEM}.conv1", f"{_STEM}.bn1"
    previous = producer.get(source)
    if previous is not None and previous.op_type == "Conv" and previous.input[1].endswith(".conv1.weight"):
        unit = previous.input[1][:-len(".conv1.weight")]
        return f"{unit}.conv2", f"{unit}.bn"
    raise DataError(f"{path}: conv node '{node.name}' has anonymous (BN-folded) weights but does not follow "
                    f"a named ConvDPUnit 1x1 conv nor read the input; not a libfacedetection.train YuNet export "
                    f"(the 2022mar/120x160 model has another architecture)")
