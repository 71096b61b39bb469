"""INT8 as a QDQ ONNX model (QuantizeLinear / DequantizeLinear pairs), which
onnxruntime and OpenVINO run with their int8 kernels.

paddle2onnx 2.x refuses PaddleSlim's quantized programs ("Only support e4m3
or e5m2 now"), so the INT8 ONNX is made the other way round: the fp32 program
that PaddleSlim calibrates (same rewrites, same range equalization) goes to
ONNX, and onnxruntime's ``quantize_static`` quantizes it, calibrated on the
same images.

Speed comes from quantizing whole chains, not single convs. Measured with
onnxruntime's profiler on SCRFD-500M-KPS (640x640, AVX2 without VNNI), int8
over fp32 kernel time: 1x1 convs 0.58x, dense 3x3 convs 0.76x, depthwise
convs 1.55x, the 3-channel stem 1.81x; every float op between two int8 convs
costs a DequantizeLinear, a QuantizeLinear and layout changes, which made the
conv-only model 1.2-1.4x slower than fp32. Hence:
  - batch norms are folded into their convs first (onnxruntime's basic,
    hardware-independent graph optimizations), or each conv's output
    quantization would sit between it and its batch norm;
  - Relu and Add are quantized with the convs (Relu disappears into the
    conv's output range), so a backbone runs int8 from end to end;
  - the stem stays in float (``skip``, default "first"): quantizing the
    image costs SCRFD-500M-KPS 0.6-1.0 AP, and its int8 conv is slower anyway.
Other settings, measured on the WIDER 200-image subset: per-channel int8
weights, symmetric (per-channel needs opset 13, DequantizeLinear's ``axis``);
full 8-bit weights (no ``reduce_range``: 7-bit weights cost
RetinaFace-mnet0.25 0.5-1.2 more medium AP); min/max activation ranges by
default (``calibration``). RetinaFace-mnet0.25's leaky-ReLU chains have a
few outlier activations that stretch min/max ranges: its config picks
``percentile`` (onnxruntime's 99.999th), which on the same equalized model
lost 0.60 / 0.39 / 0.66 AP against min/max's 1.13 / 1.27 / 0.72; 7-bit
weights (0.45 / 1.01 / 0.48, so vpmaddubsw saturation is not the main
loss), entropy ranges (same as 7-bit) and Max/Mul leaky ReLU rewritten to
int8 LeakyRelu (3-5 AP lost) did worse. Those figures predate the
OpenVINO rules below, which leave its leaky-ReLU convs in float: it now loses
0.05 / 0.16 / 0.23.

OpenVINO 2026.4 computes three quantized patterns wrong. First, a conv whose output is
added to an upsampled tensor (an FPN's top-down merge: lateral conv + Resize,
cropped by a Slice). It moves the conv's bias into the add's quantization and
returns lateral outputs clipped near zero (SCRFD-500M-KPS: its 1x1 lateral
convs' outputs off by 1.2x their mean magnitude, no such error in the same conv
run alone), which cost 4.4 medium and 10.4 hard AP. Not a non-VNNI saturation:
7-bit weights (``reduce_range``) left the hard AP at 49.4, and floating the
depthwise or output convs did not help either. So such adds and the convs they
read stay in float (``upsample_merge_nodes``); OpenVINO then loses SCRFD-500M-KPS
0.31 / 0.46 / 0.64 AP, onnxruntime 0.37 / 0.42 / 0.59. Second:
an add of a constant after a per-channel Mul (the affine part of SCRFD-500M's
head group norms; three of them have a channel with a negative scale). OpenVINO
folds both into the add's quantization and gets the negative channel wrong, so
SCRFD-500M's scores were off by as much as their mean (AP lost 0.86 / 1.25 / 1.94).
With those adds in float (``constant_adds``) it loses -0.09 / 0.24 / 0.16,
onnxruntime -0.18 / 0.16 / 0.01. Third: a conv read by a leaky ReLU
written as Max(x, Mul(x, slope)) (RetinaFace-mnet0.25 lost 21.2 / 20.0 / 9.3
AP under OpenVINO). With those convs in float (``leaky_relu_convs``) both
engines lose it 0.05 / 0.16 / 0.23, and run it faster than before (network
over onnxruntime's FP32, one run: onnxruntime 1.15x -> 1.02x, OpenVINO
0.91x -> 0.71x; OpenVINO's FP32 is 0.73x there).
"""
import os
import tempfile

from ..core.errors import PPFaceDetError
from .onnx_rewrites import producers_of, readers_of
from .quant_groups import choose_convs

QDQ_OPSET = 13
CHAIN_OPS = ("Conv", "Relu", "Add")
DEFAULT_ONNX_SKIP = "first"
CALIBRATIONS = ("minmax", "percentile", "entropy")
DEFAULT_CALIBRATION = "minmax"


class CalibrationReader:
    """onnxruntime's CalibrationDataReader over a batch generator factory."""

    def __init__(self, batches):
        self.batches = batches()

    def get_next(self):
        return next(self.batches, None)


def skipped_conv_nodes(model, skip):
    """Names of the Conv nodes of ``model`` (onnx ModelProto) left in float."""
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    readers = readers_of(model)

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


def upsample_merge_nodes(model):
    """Names of the Add nodes of ``model`` that add a conv's output to an
    upsampled tensor (Resize, maybe cropped by Slice), and of those convs:
    what OpenVINO's int8 pipeline gets wrong, left in float."""
    producer = producers_of(model)

    def upsampled(name):
        node = producer.get(name)
        while node is not None and node.op_type == "Slice":
            node = producer.get(node.input[0])
        return node is not None and node.op_type == "Resize"
    names = []
    for add in (n for n in model.graph.node if n.op_type == "Add"):
        convs = [producer[name].name for name in add.input if name in producer and producer[name].op_type == "Conv"]
        if convs and any(upsampled(name) for name in add.input):
            names += [add.name] + convs
    return sorted(set(names))


def constant_adds(model):
    """Names of the Add nodes of ``model`` with a constant operand (a group
    norm's affine shift; conv biases are folded into their convs by then),
    left in float: OpenVINO folds the per-channel scale before them into the
    add's quantization and gets channels with a negative scale wrong."""
    constants = {t.name for t in model.graph.initializer}
    return sorted(n.name for n in model.graph.node if n.op_type == "Add" and any(i in constants for i in n.input))


def leaky_relu_convs(model):
    """Names of the Conv nodes of ``model`` read by a Max or Mul (a leaky ReLU
    written as max(x, slope * x)), left in float: OpenVINO's int8 pipeline
    gets the pair of float ops on one dequantized tensor wrong."""
    readers = readers_of(model)
    return sorted(n.name for n in model.graph.node if n.op_type == "Conv"
                  and any(r.op_type in ("Max", "Mul") for r in readers.get(n.output[0], [])))


def fold_batch_norms(fp32_onnx, output):
    """``fp32_onnx`` after onnxruntime's basic optimizations (batch norms into
    convs, Identity removed, constants folded), written to ``output``."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = output
    ort.InferenceSession(fp32_onnx, options, providers=["CPUExecutionProvider"])
    return output


def quantize_onnx(fp32_onnx, output, batches, skip=DEFAULT_ONNX_SKIP, calibration=DEFAULT_CALIBRATION):
    """Write the QDQ INT8 model of ``fp32_onnx`` (opset >= 13) to ``output``;
    ``calibration`` (one of CALIBRATIONS) picks how activation ranges are set."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    methods = dict(zip(CALIBRATIONS, (CalibrationMethod.MinMax, CalibrationMethod.Percentile,
                                      CalibrationMethod.Entropy)))
    if calibration not in methods:
        raise PPFaceDetError(f"int8 calibration '{calibration}' is not one of {', '.join(CALIBRATIONS)}")
    with tempfile.TemporaryDirectory() as tmp:
        model = onnx.load(fold_batch_norms(fp32_onnx, os.path.join(tmp, "folded.onnx")))
    float_nodes = (skipped_conv_nodes(model, skip) + upsample_merge_nodes(model) + constant_adds(model)
                   + leaky_relu_convs(model))
    quantize_static(model, output, CalibrationReader(batches), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=list(CHAIN_OPS), per_channel=True, reduce_range=False,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    nodes_to_exclude=float_nodes,
                    calibrate_method=methods[calibration])
    return output
