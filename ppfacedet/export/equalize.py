"""Channel range equalization of an fp32 static program before INT8 calibration.

An INT8 conv input has one scale for all its channels. In these mobile
backbones the channels of a batch-normed activation differ in range by up to
two orders of magnitude, so the narrow channels keep only a few of the 256
levels, and every layer reading them inherits that rounding error. Measured
on RetinaFace-mnet0.25 (WIDER 200-image subset, AVX2 CPU), equalizing cuts the
AP drop (easy / medium / hard) of its QDQ ONNX in onnxruntime, depthwise, stem
and output convs in float, from 0.36 / 1.07 / 0.95 to 0.21 / 0.77 / 0.41, and
of oneDNN int8 with depthwise convs in float from 1.16 / 1.59 / 1.18 to
0.68 / 1.46 / 0.58.

The fix (cross-layer equalization with activation ranges, after Nagel et
al. 2019, "Data-Free Quantization") changes no float output:

    batch_norm -> positively homogeneous ops (relu, leaky relu, max(x, a*x),
    positive scale) -> one conv

    f(x / s) = f(x) / s for s > 0 along such a chain, so dividing the norm's
    channel-i gain and shift by s_i and multiplying the reading conv's
    input-channel-i weights by s_i is the same function.

With a_i the calibration range of channel i and w_i the range of the conv's
weights on it, s_i = sqrt(a_i / w_i) makes both a_i / s_i and w_i * s_i equal
to sqrt(a_i * w_i): the activation channels get closer in range, and no
weight column grows past its row's other columns by more than the activation
narrowed. Weights are quantized per output channel, so this costs them little.
"""
import numpy as np

CONVS = ("conv2d", "depthwise_conv2d")
# Ops f with f(x / s) = f(x) / s for s > 0 (per channel), when the checks in
# _is_homogeneous hold.
HOMOGENEOUS = ("relu", "leaky_relu", "scale", "elementwise_max")
# Equalization factors are kept within this band around their geometric mean:
# a dead channel (range 0) must not get an infinite or zero factor.
MAX_FACTOR = 1000.0


def equalization_pairs(program, keep=()):
    """[(batch_norm op, activation var name, conv op)] where the norm's output
    reaches only that conv, through positively homogeneous ops, and no
    variable on the way is in ``keep`` (fetch targets)."""
    ops = list(program.global_block().ops)
    pairs = []
    for index, norm in enumerate(ops):
        if norm.type == "batch_norm":
            found = _chain_end(norm.output("Y")[0], ops[index + 1:], keep)
            if found is not None:
                pairs.append((norm, *found))
    return pairs


def _chain_end(start, later_ops, keep):
    """(the variable the single reading conv takes, that conv), or None. The
    op list is in topological order, so an op is reached after its inputs."""
    chain, consumers = {start}, []
    for op in later_ops:
        if chain.intersection(op.input_arg_names):
            if _is_homogeneous(op, chain):
                chain.update(op.output_arg_names)
            else:
                consumers.append(op)
    if chain.intersection(keep) or len(consumers) != 1:
        return None
    conv = consumers[0]
    if conv.type not in CONVS or conv.input("Input")[0] not in chain or _layout(conv) is None:
        return None
    return conv.input("Input")[0], conv


def _is_homogeneous(op, chain):
    if op.type not in HOMOGENEOUS:
        return False
    if op.type == "scale":
        return op.attr("bias") == 0.0 and op.attr("scale") > 0.0
    if op.type == "leaky_relu":
        return op.attr("alpha") >= 0.0
    if op.type == "elementwise_max":
        return op.input("X")[0] in chain and op.input("Y")[0] in chain
    return True


def _layout(conv):
    """'plain' (groups 1), 'depthwise' (one input and one output channel per
    group) or None (other grouped convs: not equalized)."""
    out_channels, in_per_group = conv.block.var(conv.input("Filter")[0]).shape[:2]
    groups = conv.attr("groups")
    if groups == 1:
        return "plain"
    return "depthwise" if in_per_group == 1 and out_channels == groups else None


def channel_ranges(exe, program, names, batches):
    """{var name: per-channel max |x|} over the calibration batches."""
    ranges = {name: None for name in names}
    for feed in batches():
        for name, value in zip(names, exe.run(program, feed=feed, fetch_list=list(names))):
            peak = np.abs(np.asarray(value)).max(axis=(0, 2, 3))
            ranges[name] = peak if ranges[name] is None else np.maximum(ranges[name], peak)
    return ranges


def equalization_factors(activation_range, weight_range):
    """s_i = sqrt(a_i / w_i), normalised to geometric mean 1 and kept within
    MAX_FACTOR of it; channels with an empty range keep 1."""
    valid = (activation_range > 0) & (weight_range > 0)
    factors = np.ones_like(activation_range, dtype=np.float64)
    if not valid.any():
        return factors
    factors[valid] = np.sqrt(activation_range[valid] / weight_range[valid])
    factors[valid] /= np.exp(np.log(factors[valid]).mean())
    return np.clip(factors, 1.0 / MAX_FACTOR, MAX_FACTOR)


def conv_input_weight_ranges(filter_value, layout):
    """Per input channel max |w| of a conv filter [out, in, k, k] (depthwise: [C, 1, k, k])."""
    return np.abs(filter_value).max(axis=(1, 2, 3) if layout == "depthwise" else (0, 2, 3))


def equalize_ranges(exe, program, scope, batches, keep=()):
    """Equalize every batch_norm -> conv pair of ``program`` in place (its
    float outputs do not change); returns how many pairs."""
    import paddle
    pairs = equalization_pairs(program, keep)
    if not pairs:
        return 0
    ranges = channel_ranges(exe, program, sorted({var for _, var, _ in pairs}), batches)
    place = paddle.CPUPlace()
    for norm, var, conv in pairs:
        weight = scope.find_var(conv.input("Filter")[0]).get_tensor()
        filter_value = np.array(weight)
        layout = _layout(conv)
        factors = equalization_factors(ranges[var], conv_input_weight_ranges(filter_value, layout))
        shape = (-1, 1, 1, 1) if layout == "depthwise" else (1, -1, 1, 1)
        weight.set((filter_value * factors.reshape(shape)).astype(filter_value.dtype), place)
        for param in (norm.input("Scale")[0], norm.input("Bias")[0]):
            tensor = scope.find_var(param).get_tensor()
            value = np.array(tensor)
            tensor.set((value / factors).astype(value.dtype), place)
    return len(pairs)
