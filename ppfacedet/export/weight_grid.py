"""Weights that oneDNN int8 runs alike on CPUs with and without VNNI.

oneDNN quantizes a conv's weights per output channel, q = round(w * 127 / max|w|).
On a CPU without VNNI (AVX2, AVX-512 without VNNI) a conv whose input is
signed int8 has its products summed in pairs in 16 bits, so oneDNN halves
the weights to keep those sums from overflowing: it computes round(q / 2),
7-bit weights rounded twice. The second rounding is a tie for every odd q,
and the doubly rounded weights are off by up to 0.75 of a 7-bit step instead
of 0.5. RetinaFace-mnet0.25, whose leaky ReLUs make nearly every conv input
signed, loses 1.61 / 1.46 / 0.59 AP (easy / medium / hard, WIDER 200-image
subset) that way on an AVX2 EPYC; the same program with its fake-quant ops run
in float (8-bit weights, the arithmetic of a VNNI CPU) loses 0.84 / 0.58 / 0.29.

So before calibration each such conv's weights are rounded once onto the
7-bit grid, w = k * max|w| / 63.5 with integer |k| <= 63, the largest weight
of each output channel kept as it is. The 8-bit quantization then gives
q = 2k exactly, and without VNNI oneDNN's halving gives k exactly (the
largest weight, q = 127, becomes 64: 0.8 % off): CPUs with and without VNNI
run the same 7-bit weights, so the AP measured on one holds on the other.
RetinaFace-mnet0.25 then loses 0.28 / 0.63 / 0.19 in oneDNN int8 on the AVX2
EPYC (0.61 / 0.67 / 0.40 calibrated on 64 images instead of 32), and
0.01 / 0.47 / 0.36 with the fake-quant ops in float. A conv whose input is the
output of a ReLU gets unsigned int8 input and full 8-bit weights on every CPU,
so it is left alone.
"""
import numpy as np

# oneDNN's int8 passes quantize these ops' outputs as unsigned (compute_propagate_scales).
UNSIGNED_PRODUCERS = ("relu", "relu6")
# Ops whose output int8 scale, sign included, is their input's.
SCALE_PRESERVING = ("pool2d", "reshape2", "transpose2", "slice", "split", "nearest_interp", "nearest_interp_v2")
HALF_RANGE = 63.5  # 127 / 2: the 8-bit range halved


def signed_input_convs(ops, convs):
    """The convs of ``convs`` (ops of the topologically ordered ``ops``) whose
    input oneDNN quantizes as signed int8: not a ReLU's output, directly or
    through ops that keep the scale."""
    producer = {name: op for op in ops for name in op.output_arg_names}

    def signed(name):
        op = producer.get(name)
        while op is not None and op.type in SCALE_PRESERVING:
            op = producer.get(op.input("X")[0])
        return op is None or op.type not in UNSIGNED_PRODUCERS
    return [conv for conv in convs if signed(conv.input("Input")[0])]


def seven_bit_weights(weights):
    """``weights`` [out, ...] rounded per output channel onto the grid
    k * max|w| / 63.5 (|k| <= 63), each channel's largest weights unchanged."""
    weights = np.asarray(weights)
    flat = weights.reshape(weights.shape[0], -1).astype(np.float64)
    peak = np.abs(flat).max(axis=1, keepdims=True)
    step = np.where(peak > 0, peak / HALF_RANGE, 1.0)
    snapped = np.clip(np.round(flat / step), -63, 63) * step
    snapped = np.where(np.abs(flat) >= peak, flat, snapped)
    return snapped.reshape(weights.shape).astype(weights.dtype)


def snap_signed_input_convs(program, scope, convs):
    """Round the weights of those of ``convs`` that take signed input onto
    the 7-bit grid, in ``scope``; returns how many convs."""
    import paddle
    chosen = signed_input_convs(list(program.global_block().ops), convs)
    for conv in chosen:
        tensor = scope.find_var(conv.input("Filter")[0]).get_tensor()
        tensor.set(seven_bit_weights(np.array(tensor)), paddle.CPUPlace())
    return len(chosen)
