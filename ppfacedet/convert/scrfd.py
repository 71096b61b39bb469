"""Import official SCRFD weights: the released ONNX files or mmdet ``.pth`` checkpoints.

ONNX. The exports fold BatchNorm into the convs and lose the module names of
the backbone (and of BN heads), so the mapping is by execution order: our
model runs once with hooks recording the order its convs, norms and scales
execute in, which is the order the official forward ran them and so the
order of the graph's Conv nodes. Each conv's norm is whatever norm layer runs
next: BatchNorm is restored with ``unfold_batchnorm``; a GN head was exported
as Reshape -> InstanceNormalization -> Reshape -> Mul(gamma) -> Add(beta), and
gamma/beta are read from that chain; a per-stride scale is the Mul by a scalar
that follows the box conv.

.pth. What the official trainer (mmcv's save_checkpoint) writes, or a bare state
dict. Our sub-layer names are the official ones, so the mapping is a rename:
``bbox_head.`` -> ``head.``, per-stride keys ``(8, 8)`` -> ``8``, BN statistics
``running_mean``/``running_var`` -> ``_mean``/``_variance``. The official
modules' other buffers are dropped by name (``DROPPED_BUFFERS``); any other
entry that matches no tensor of the model is an error.
"""
import os
import re

import numpy as np
import paddle.nn as nn

from ..core.errors import DataError
from ..core.registry import CONVERTERS
from ..modeling.layers import Scale
from .onnx_weights import initializers, load_onnx, unfold_batchnorm
from .run_order import layers_in_run_order
from .torch_checkpoint import load_mmcv_state_dict

TRACE_INPUT_SIZE = 64

# Buffers of the official modules with no counterpart here (every one the official SCRFD and DamoFD models
# register; tests/fixtures/official_checkpoint_keys.json.gz lists them per config):
#   ``num_batches_tracked`` (every BatchNorm): a step counter, read only when BN momentum is None, which mmdet
#       never sets; Paddle's BatchNorm has none;
#   ``bbox_head.integral.project`` (``Integral``, built by every SCRFDHead): the constant
#       linspace(0, reg_max, reg_max + 1) of distribution-focal box decoding, used only with DFL, which no
#       official config enables (``loss_dfl=False``: the box conv then has 4 outputs per anchor, as ours).
DROPPED_BUFFERS = re.compile(r"(^|\.)num_batches_tracked$|^bbox_head\.integral\.project$")


def execution_order(model):
    """[(name, layer)] of the convs, norms and scales of ``model`` in the order
    a forward pass runs them (a shared layer appears once per call)."""
    return layers_in_run_order(model, (nn.Conv2D, nn.BatchNorm2D, nn.GroupNorm, Scale), input_size=TRACE_INPUT_SIZE)


class OnnxGraph:
    """Conv nodes in graph order, and the norm / scale values attached to each."""

    def __init__(self, path):
        model = load_onnx(path)
        self.inits = initializers(model)
        self.nodes = list(model.graph.node)
        self.consumers = {}
        for node in self.nodes:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.convs = [n for n in self.nodes if n.op_type == "Conv"]

    def _next(self, tensor, op_type):
        return next((n for n in self.consumers.get(tensor, []) if n.op_type == op_type), None)

    def _constant(self, node):
        values = [self.inits[i] for i in node.input if i in self.inits]
        return values[0] if values else None

    def conv(self, node):
        weight = self.inits[node.input[1]]
        bias = self.inits[node.input[2]] if len(node.input) > 2 else None
        return weight, bias

    def group_norm(self, node):
        """(gamma, beta) of the GN exported after this conv, or None."""
        reshape = self._next(node.output[0], "Reshape")
        inorm = reshape is not None and self._next(reshape.output[0], "InstanceNormalization")
        if not inorm:
            return None
        back = self._next(inorm.output[0], "Reshape")
        mul = back is not None and self._next(back.output[0], "Mul")
        add = mul and self._next(mul.output[0], "Add")
        if not add:
            raise DataError(f"ONNX conv {node.name or node.output[0]}: InstanceNormalization is not followed "
                            f"by the Reshape -> Mul -> Add of an exported GroupNorm")
        return self._constant(mul).reshape(-1), self._constant(add).reshape(-1)

    def scale(self, node):
        """The scalar this conv's output is multiplied by, or None."""
        mul = self._next(node.output[0], "Mul")
        value = self._constant(mul) if mul is not None else None
        return None if value is None or value.size != 1 else value.reshape(())


@CONVERTERS.register
class SCRFDConverter:
    """``converter(model, source)``: source is an ``.onnx`` path, a PyTorch
    checkpoint path (.pth/.pt/.tar) or an already loaded ``{official name: array}``
    state dict."""

    def __call__(self, model, source):
        if isinstance(source, dict):
            return self.from_state_dict(model, source)
        if os.path.splitext(str(source))[1].lower() == ".onnx":
            return self.from_onnx(model, source)
        # Anything else is taken for a torch.save file (.pth, .pt, .tar ...);
        # the reader says so plainly when it is not one.
        return self.from_state_dict(model, load_mmcv_state_dict(source), source)

    # ------------------------------------------------------------------ ONNX
    def from_onnx(self, model, path):
        graph = OnnxGraph(path)
        order = execution_order(model)
        convs = [(i, name, layer) for i, (name, layer) in enumerate(order) if isinstance(layer, nn.Conv2D)]
        if len(convs) != len(graph.convs):
            raise DataError(f"{path}: the graph has {len(graph.convs)} Conv nodes but the model runs "
                            f"{len(convs)} convs; the config does not describe this export")
        out = {}
        for (i, name, layer), node in zip(convs, graph.convs):
            weight, bias = graph.conv(node)
            if tuple(weight.shape) != tuple(layer.weight.shape):
                raise DataError(f"{path}: Conv node {node.output[0]} has weight {list(weight.shape)} but "
                                f"'{name}' expects {list(layer.weight.shape)}")
            follower_name, follower = order[i + 1] if i + 1 < len(order) else (None, None)
            if isinstance(follower, nn.BatchNorm2D):
                weight, bn = unfold_batchnorm(weight, bias, eps=follower._epsilon)
                out.update({f"{follower_name}.{k}": v for k, v in bn.items()})
                bias = None
            elif isinstance(follower, nn.GroupNorm):
                gn = graph.group_norm(node)
                if gn is None:
                    raise DataError(f"{path}: '{name}' is followed by GroupNorm in the model but Conv node "
                                    f"{node.output[0]} has no exported GroupNorm after it")
                out[f"{follower_name}.weight"], out[f"{follower_name}.bias"] = gn
            elif isinstance(follower, Scale):
                value = graph.scale(node)
                out[f"{follower_name}.scale"] = np.asarray(1.0 if value is None else value, np.float32)
            out[f"{name}.weight"] = weight
            if layer.bias is not None:
                out[f"{name}.bias"] = bias if bias is not None else np.zeros(layer.bias.shape, np.float32)
            elif bias is not None and np.any(bias):
                raise DataError(f"{path}: Conv node {node.output[0]} has a bias but '{name}' has none and "
                                f"no BatchNorm to carry it")
        return self._complete(model, out, path)

    # ------------------------------------------------------------------ .pth
    @staticmethod
    def official_to_ours(key):
        """Official mmdet name -> our parameter name, or None for a buffer we drop."""
        if DROPPED_BUFFERS.search(key):
            return None
        key = re.sub(r"^bbox_head\.", "head.", key)
        key = re.sub(r"\.\((\d+), \d+\)\.", r".\1.", key)
        key = re.sub(r"\.running_mean$", "._mean", key)
        return re.sub(r"\.running_var$", "._variance", key)

    def from_state_dict(self, model, state, source="checkpoint"):
        out, official = {}, {}
        for key, value in state.items():
            ours = self.official_to_ours(key)
            if ours is None:
                continue
            if ours in out:
                raise DataError(f"{source}: '{official[ours]}' and '{key}' both map to '{ours}'")
            out[ours], official[ours] = np.asarray(value, np.float32), key
        return self._complete(model, out, source, official)

    # ------------------------------------------------------------------ checks
    @staticmethod
    def _complete(model, weights, source, official=None):
        """``weights`` checked against the model; ``official`` maps our names back to the source's for errors."""
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        missing = sorted(set(expected) - set(weights))
        if missing:
            raise DataError(f"{source}: no weights for {len(missing)} model entries, e.g. {missing[:5]}")
        unexpected = sorted(set(weights) - set(expected))
        if unexpected:
            names = [(official or {}).get(k, k) for k in unexpected[:5]]
            raise DataError(f"{source}: {len(unexpected)} entries match nothing in the model, e.g. {names}")
        for key, shape in expected.items():
            value = weights[key]
            if tuple(value.shape) != shape:
                if value.size != int(np.prod(shape)):
                    raise DataError(f"{source}: '{key}' has shape {list(value.shape)}, the model needs {list(shape)}")
                weights[key] = value.reshape(shape)
        return {k: weights[k].astype(np.float32) for k in expected}
