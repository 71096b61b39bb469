"""INT8 as a QDQ ONNX model (QuantizeLinear / DequantizeLinear pairs), which
onnxruntime and OpenVINO run with their int8 kernels.

paddle2onnx 2.x refuses PaddleSlim's quantized programs ("Only support e4m3
or e5m2 now"), so the INT8 ONNX is made the other way round: the fp32 program
that PaddleSlim calibrates (same rewrites, same range equalization) goes to
ONNX, and onnxruntime's ``quantize_static`` quantizes it, calibrated on the
same images. The convs left in float are the same groups as in the Paddle
program (``skip``).

Settings, measured on the WIDER 200-image subset with onnxruntime on an AVX2
CPU (no VNNI: its u8 x s8 kernels sum pairs in 16 bits, so this is the less
precise case; VNNI kernels do not saturate):
  per-channel int8 weights, symmetric; uint8 activations, min/max ranges.
    Per-channel weights need opset 13 (DequantizeLinear's ``axis``).
  full 8-bit weights (no ``reduce_range``): 7-bit weights cost
    RetinaFace-mnet0.25 0.5-1.2 more medium AP.
"""
from .quant_groups import choose_convs

QDQ_OPSET = 13


class CalibrationReader:
    """onnxruntime's CalibrationDataReader over a batch generator factory."""

    def __init__(self, batches):
        self.batches = batches()

    def get_next(self):
        return next(self.batches, None)


def skipped_conv_nodes(model, skip):
    """Names of the Conv nodes of ``model`` (onnx ModelProto) left in float."""
    nodes = list(model.graph.node)
    convs = [n for n in nodes if n.op_type == "Conv"]
    readers = {}
    for node in nodes:
        for name in node.input:
            readers.setdefault(name, []).append(node)

    def feeds_a_conv(conv):
        reached, todo = set(), list(conv.output)
        while todo:
            for reader in readers.get(todo.pop(), []):
                if reader.op_type == "Conv":
                    return True
                if reader.name not in reached:
                    reached.add(reader.name)
                    todo += list(reader.output)
        return False

    def is_depthwise(conv):
        return any(a.name == "group" and a.i > 1 for a in conv.attribute)

    return sorted(n.name for n in choose_convs(convs, skip, is_depthwise, feeds_a_conv))


def quantize_onnx(fp32_onnx, output, batches, skip):
    """Write the QDQ INT8 model of ``fp32_onnx`` (opset >= 13) to ``output``."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    model = onnx.load(fp32_onnx)
    quantize_static(model, output, CalibrationReader(batches), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=["Conv"], per_channel=True, reduce_range=False,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    nodes_to_exclude=skipped_conv_nodes(model, skip), calibrate_method=CalibrationMethod.MinMax)
    return output
