"""Read weights out of ONNX exports and undo BatchNorm folding."""
import numpy as np


def load_onnx(path):
    import onnx
    return onnx.load(path)


def initializers(model):
    from onnx import numpy_helper
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def conv_weights(model):
    """[(node, weight, bias or None)] for every Conv node, in graph order."""
    inits = initializers(model)
    out = []
    for node in model.graph.node:
        if node.op_type == "Conv":
            bias = inits.get(node.input[2]) if len(node.input) > 2 else None
            out.append((node, inits[node.input[1]], bias))
    return out


def unfold_batchnorm(weight, bias, eps=1e-5):
    """A conv with BN folded in, as conv (no bias) + an identity-statistics BN.

    Folding gave w' = w * g / sqrt(v + eps) and b' = beta - m * g / sqrt(v + eps).
    Choosing g = 1, beta = b', m = 0, v = 1 - eps makes BN(conv(x)) reproduce
    the folded conv exactly, and leaves a model that can be fine-tuned.
    """
    channels = weight.shape[0]
    bias = np.zeros(channels, np.float32) if bias is None else bias.astype(np.float32)
    bn = {
        "weight": np.ones(channels, np.float32),
        "bias": bias,
        "_mean": np.zeros(channels, np.float32),
        "_variance": np.full(channels, 1.0 - eps, np.float32),
    }
    return weight.astype(np.float32), bn
