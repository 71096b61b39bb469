"""Model size and speed measured the same way for a paddle model and an ONNX file.

Conventions (chosen so that one network counted both ways gives the same
numbers; YuNet-n as a ppfacedet model and as ``yunet_n_dynamic.onnx`` agree
exactly):

* **params** = parameters of the network as deployed, i.e. with every
  BatchNorm folded into the conv before it (what an ONNX export stores).
  ONNX: float initializers used as Conv/ConvTranspose/Gemm/MatMul weights or
  biases, PRelu slopes, norm scales/shifts and Mul/Add constants; BN running
  statistics and shape constants (Reshape/Resize/Slice/... inputs) are not
  counted; a bias the exporter shared between convs because the values were
  equal counts once per conv. Paddle: trainable parameters, minus the BN scale and shift of every
  BN that directly follows a conv, plus one bias per output channel of such a
  conv that had none (folding creates it).
* **train_params** = trainable parameters of the training graph (BN scale and
  shift included): the number the official READMEs publish. Known only for
  ppfacedet models (an ONNX export has lost which convs had a BN).
* **MACs** = multiply-accumulates of Conv and fully connected layers only:
  ``k_h * k_w * C_in / groups`` per output element (``C_in`` per output for
  Gemm/MatMul). Biases, BN, activations, pooling, resizes and adds are not
  counted. This is the usual "FLOPs" of mobile detector tables (the
  libfacedetection.train comparison lists SCRFD-0.5 at 184 M and
  RetinaFace-0.25 at 245 M at 320x320; this counter gives 183.4 M and 245.3 M).
  ``ppfacedet.modeling.flops.count_flops`` follows mmcv instead (adds bias,
  BN and ReLU ops), so it is a few percent higher; it is not used here
  because an ONNX graph with folded BN cannot reproduce it.
* **FPS** = 1 / median wall time of one forward pass of the bare network on a
  zero N x N image (no pre/post-processing), after warm-up, with the same
  number of CPU threads for every model.
"""
import statistics
import time

import numpy as np
import paddle
import paddle.nn as nn

from ..modeling.flops import count_params

# ONNX ops whose constant inputs are shapes, indices or scales, not weights.
_SHAPE_OPS = {"Reshape", "Resize", "Upsample", "Slice", "Pad", "Expand", "Tile", "ConstantOfShape",
              "Gather", "Unsqueeze", "Squeeze", "Split", "TopK", "Range", "Clip"}
_WEIGHT_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "PRelu", "BatchNormalization",
               "InstanceNormalization", "LayerNormalization", "GroupNormalization", "Mul", "Add"}
_FLOAT_TYPES = {1, 10, 11, 16}  # FLOAT, FLOAT16, DOUBLE, BFLOAT16


# ---------------------------------------------------------------- paddle side
def paddle_params(model):
    """{'params': BN-folded deploy count, 'train_params': trainable count} of a paddle model."""
    folded = _conv_bn_pairs(model)
    params = count_params(model)
    for conv, bn in folded:
        channels = int(bn.weight.shape[0])
        params -= 2 * channels
        if conv.bias is None:
            params += channels
    return {"params": params, "train_params": count_params(model)}


def _conv_bn_pairs(model):
    """(conv, bn) pairs where the BN reads a conv's output directly, found by
    running the model once on a small input and matching tensors."""
    produced_by, pairs, handles = {}, [], []

    def conv_hook(layer, inputs, output):
        produced_by[id(output)] = (layer, output)  # keep output alive so ids stay unique

    def bn_hook(layer, inputs):
        source = produced_by.get(id(inputs[0]))
        if source is not None:
            pairs.append((source[0], layer))

    for layer in model.sublayers(include_self=True):
        if isinstance(layer, (nn.Conv2D, nn.Conv2DTranspose)):
            handles.append(layer.register_forward_post_hook(conv_hook))
        elif isinstance(layer, (nn.BatchNorm, nn.BatchNorm2D, nn.SyncBatchNorm)):
            handles.append(layer.register_forward_pre_hook(bn_hook))
    _run_zeros(model, 64)
    for h in handles:
        h.remove()
    return pairs


def paddle_macs(model, size):
    """Conv/Linear MACs per image at a size x size input (see the module docstring)."""
    total, handles = [0], []

    def conv_hook(layer, inputs, output):
        total[0] += int(np.prod(output.shape)) * int(np.prod(layer.weight.shape[1:]))

    def deconv_hook(layer, inputs, output):
        x = inputs[0]
        total[0] += int(np.prod(x.shape)) // int(x.shape[1]) * int(np.prod(layer.weight.shape))

    def linear_hook(layer, inputs, output):
        total[0] += int(np.prod(output.shape)) * int(layer.weight.shape[0])

    for layer in model.sublayers(include_self=True):
        if isinstance(layer, (nn.Conv1D, nn.Conv2D, nn.Conv3D)):
            handles.append(layer.register_forward_post_hook(conv_hook))
        elif isinstance(layer, nn.Conv2DTranspose):
            handles.append(layer.register_forward_post_hook(deconv_hook))
        elif isinstance(layer, nn.Linear):
            handles.append(layer.register_forward_post_hook(linear_hook))
    _run_zeros(model, size)
    for h in handles:
        h.remove()
    return total[0]


def _run_zeros(model, size):
    was_training = model.training
    model.eval()
    try:
        with paddle.no_grad():
            model(paddle.zeros([1, 3, size, size], dtype="float32"))
    finally:
        if was_training:
            model.train()


# ---------------------------------------------------------------- ONNX side
def onnx_params(path):
    """{'params': deploy count, 'train_params': None} of an ONNX file."""
    import onnx
    graph = onnx.load(str(path)).graph
    inits = {i.name: i for i in graph.initializer}
    def usable(name):
        init = inits.get(name)
        return init is not None and init.data_type in _FLOAT_TYPES and not _feeds_shape_op(name, graph)

    # Exporters merge initializers with equal values, so one bias tensor can
    # serve two different convs: a bias counts once per weight it is used
    # with; a weight used by several nodes (stride-shared heads) counts once.
    counted = set()
    for node in graph.node:
        if node.op_type not in _WEIGHT_OPS:
            continue
        inputs = list(node.input)
        if node.op_type in ("Conv", "ConvTranspose", "Gemm") and len(inputs) > 2:
            if usable(inputs[2]):
                counted.add((inputs[1], inputs[2]))
            inputs = inputs[:2]
        elif node.op_type == "BatchNormalization":
            inputs = inputs[:3]  # X, scale, B; the running mean/var are statistics
        counted.update((name,) for name in inputs if usable(name))
    return {"params": int(sum(int(np.prod(inits[key[-1]].dims)) for key in counted)), "train_params": None}


def _feeds_shape_op(name, graph):
    return any(name in node.input and node.op_type in _SHAPE_OPS for node in graph.node)


def onnx_macs(path, size):
    """Conv/Gemm/MatMul MACs per image at a 1 x C x size x size input.

    Shapes come from ONNX shape inference on the graph with its input fixed to
    that size; exports whose sizes flow through Shape/Resize ops leave some
    unknown, and those are read from one onnxruntime run instead."""
    import onnx
    from onnx import shape_inference
    model = onnx.load(str(path))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    image_input = _image_input(graph, inits, path)
    _fix_input_dims(image_input, size)
    inferred = shape_inference.infer_shapes(model)
    shapes = {vi.name: _static_dims(vi) for vi in
              list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input)}
    compute = [n for n in graph.node if n.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul")]
    needed = {t for n in compute for t in (n.output[0], n.input[0])}
    unknown = [t for t in needed if t not in inits and shapes.get(t) is None]
    if unknown:
        shapes.update(_shapes_from_onnxruntime(model, image_input, size, unknown))
    total = 0
    for node in compute:
        out = shapes[node.output[0]]
        if node.op_type == "Conv":
            total += int(np.prod(out)) * int(np.prod(inits[node.input[1]].dims[1:]))
        elif node.op_type == "ConvTranspose":
            x = shapes[node.input[0]]
            total += int(np.prod(x)) // x[1] * int(np.prod(inits[node.input[1]].dims))
        else:  # Gemm / MatMul: one MAC per output element and reduced input element
            a = shapes.get(node.input[0]) or list(inits[node.input[0]].dims)
            trans_a = any(att.name == "transA" and att.i for att in node.attribute)
            total += int(np.prod(out)) * int(a[-2] if trans_a else a[-1])
    return total


def _image_input(graph, inits, path):
    inputs = [i for i in graph.input if i.name not in inits]
    if len(inputs) != 1 or len(inputs[0].type.tensor_type.shape.dim) != 4:
        raise ValueError(f"{path}: expected one N x C x H x W image input, got "
                         f"{[(i.name, len(i.type.tensor_type.shape.dim)) for i in inputs]}")
    return inputs[0]


def _fix_input_dims(image_input, size):
    dims = image_input.type.tensor_type.shape.dim
    channels = dims[1].dim_value or 3
    for dim, value in zip(dims, (1, channels, size, size)):
        dim.ClearField("dim_param")
        dim.dim_value = value


def _static_dims(value_info):
    dims = [d.dim_value if d.HasField("dim_value") else 0 for d in value_info.type.tensor_type.shape.dim]
    return dims if dims and all(d > 0 for d in dims) else None


def _shapes_from_onnxruntime(model, image_input, size, names):
    import onnx
    import onnxruntime as ort
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    existing = {o.name for o in probe.graph.output}
    for name in names:
        if name not in existing:
            probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    options = ort.SessionOptions()
    options.log_severity_level = 3  # the probe outputs have no declared shapes; that is expected
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    channels = image_input.type.tensor_type.shape.dim[1].dim_value
    outputs = session.run(names, {image_input.name: np.zeros((1, channels, size, size), np.float32)})
    return {n: list(o.shape) for n, o in zip(names, outputs)}


# ---------------------------------------------------------------- speed
def measure_fps(run_once, repeats=50, warmup=5):
    """Frames per second from the median of ``repeats`` timed calls."""
    for _ in range(warmup):
        run_once()
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        run_once()
        times.append(time.perf_counter() - start)
    return 1.0 / statistics.median(times)
