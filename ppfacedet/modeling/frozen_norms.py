"""Which BatchNorm layers training keeps in inference mode (``model.norm_eval``).

A BN-folded export (every official ONNX release) has no BatchNorm statistics
left: the converter writes each BN back with mean 0 and variance 1 - eps
(``convert/onnx_weights.py: unfold_batchnorm``), which reproduces the folded
conv exactly in inference mode. In training mode a BN normalises with the
batch's statistics instead, a different function, and its running statistics
drift towards them: SCRFD-500M-KPS fine-tuned that way lost all its AP in 24
steps. So by default (``auto``) such layers stay in inference mode while
training. Their scale and shift still train: in inference mode they are the
per-channel scale and bias of the folded conv, which the official training
trained too.
"""
import numpy as np
from paddle.nn.layer.norm import _BatchNormBase

# A new BatchNorm holds variance 1, eps (1e-5 in every family) away from the
# unfolded 1 - eps; float32 stores 1 - eps within 3e-8.
_UNFOLDED_VARIANCE_TOLERANCE = 1e-7


def check_norm_eval(value):
    if value != "auto" and not isinstance(value, bool):
        raise ValueError(f"model.norm_eval must be auto, true or false, got {value!r}")
    return value


def batchnorms(model):
    """[(name, layer)] of every BatchNorm in ``model``."""
    return [(name, layer) for name, layer in model.named_sublayers() if isinstance(layer, _BatchNormBase)]


def holds_unfolded_statistics(norm):
    """Whether ``norm`` holds the identity statistics ``unfold_batchnorm``
    writes (mean 0, variance 1 - eps), i.e. came from a BN-folded export."""
    variance = norm._variance.numpy()
    return not norm._mean.numpy().any() and bool(
        np.abs(variance - (1.0 - norm._epsilon)).max() < _UNFOLDED_VARIANCE_TOLERANCE)


def kept_in_inference_mode(model, norm_eval):
    """[(name, layer)] of the BatchNorm layers training keeps in inference
    mode: every one (``true``), none (``false``), or those holding unfolded
    statistics (``auto``). A kept layer never updates its statistics, so
    ``auto`` picks the same layers again after a resume."""
    if norm_eval == "auto":
        return [(name, layer) for name, layer in batchnorms(model) if holds_unfolded_statistics(layer)]
    return batchnorms(model) if norm_eval else []
