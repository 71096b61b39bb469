"""Parameter and FLOP counts of any model, by the convention of the published
SCRFD / DamoFD tables.

Those tables come from mmcv's ``get_model_complexity_info`` (SCRFD and DamoFD
``tools/get_flops.py``), which hooks *layers*, so:
  * Conv: multiply-accumulates (k*k*in/groups per output element) + one add
    per output element when the conv has a bias; Linear: MACs, bias not counted;
  * BatchNorm / GroupNorm / InstanceNorm / LayerNorm: one op per input element,
    two when affine;
  * ReLU-family layers: one op per output element; pooling: one per input
    element; Upsample layers: one per output element;
  * anything done with a function instead of a layer (F.relu, F.interpolate,
    residual adds, sigmoid) costs nothing.
Numbers are per image. "VGA" in those tables means a 640x480 input (SCRFD
measures 640x640 and scales by 0.75; DamoFD measures 640x480 directly).
Params are the trainable parameters (BN running statistics excluded).
"""
import numpy as np
import paddle
import paddle.nn as nn


def count_params(model):
    """Number of trainable parameters."""
    return int(sum(int(np.prod(p.shape)) for p in model.parameters() if not p.stop_gradient))


def _numel(t):
    return int(np.prod(t.shape))


def _first_tensor(value):
    if isinstance(value, (list, tuple)):
        return _first_tensor(value[0])
    return value


def _conv_flops(layer, inputs, output):
    out = _first_tensor(output)
    weight = layer.weight  # [out, in/groups, kh, kw]
    per_position = int(np.prod(weight.shape[1:])) * weight.shape[0]
    positions = _numel(out) // out.shape[1]
    flops = per_position * positions
    if layer.bias is not None:
        flops += _numel(out)
    return flops


def _deconv_flops(layer, inputs, output):
    x, out = _first_tensor(inputs), _first_tensor(output)
    weight = layer.weight  # [in, out/groups, kh, kw]
    flops = (_numel(x) // x.shape[1]) * int(np.prod(weight.shape))
    if layer.bias is not None:
        flops += _numel(out)
    return flops


def _linear_flops(layer, inputs, output):
    return _numel(_first_tensor(inputs)) * layer.weight.shape[1]


def _norm_flops(layer, inputs, output):
    n = _numel(_first_tensor(inputs))
    affine = getattr(layer, "weight", None) is not None
    return 2 * n if affine else n


def _output_elements(layer, inputs, output):
    return _numel(_first_tensor(output))


def _input_elements(layer, inputs, output):
    return _numel(_first_tensor(inputs))


_RULES = [
    ((nn.Conv1D, nn.Conv2D, nn.Conv3D), _conv_flops),
    ((nn.Conv1DTranspose, nn.Conv2DTranspose, nn.Conv3DTranspose), _deconv_flops),
    ((nn.Linear,), _linear_flops),
    ((nn.BatchNorm, nn.BatchNorm1D, nn.BatchNorm2D, nn.BatchNorm3D, nn.SyncBatchNorm,
      nn.GroupNorm, nn.InstanceNorm1D, nn.InstanceNorm2D, nn.InstanceNorm3D, nn.LayerNorm), _norm_flops),
    ((nn.ReLU, nn.ReLU6, nn.PReLU, nn.ELU, nn.LeakyReLU), _output_elements),
    ((nn.MaxPool1D, nn.MaxPool2D, nn.MaxPool3D, nn.AvgPool1D, nn.AvgPool2D, nn.AvgPool3D,
      nn.AdaptiveAvgPool1D, nn.AdaptiveAvgPool2D, nn.AdaptiveAvgPool3D,
      nn.AdaptiveMaxPool1D, nn.AdaptiveMaxPool2D, nn.AdaptiveMaxPool3D), _input_elements),
    ((nn.Upsample, nn.UpsamplingNearest2D, nn.UpsamplingBilinear2D), _output_elements),
]


def _rule_for(layer):
    for types, rule in _RULES:
        if isinstance(layer, types):
            return rule
    return None


def count_flops(model, input_shape, per_layer=False):
    """FLOPs per image of ``model(zeros(input_shape))`` (see the module
    docstring for what counts). With ``per_layer`` also returns
    ``{layer name: FLOPs}`` for every counted layer."""
    input_shape = [int(v) for v in input_shape]
    if len(input_shape) != 4:
        raise ValueError(f"input_shape must be N,C,H,W, got {input_shape}")
    totals = {}
    handles = []
    for name, layer in model.named_sublayers(include_self=True):
        rule = _rule_for(layer)
        if rule is None:
            continue

        def hook(layer, inputs, output, name=name, rule=rule):
            totals[name] = totals.get(name, 0) + rule(layer, inputs, output)

        handles.append(layer.register_forward_post_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with paddle.no_grad():
            model(paddle.zeros(input_shape, dtype="float32"))
    finally:
        for h in handles:
            h.remove()
        if was_training:
            model.train()
    batch = input_shape[0]
    per_image = {k: v // batch for k, v in totals.items()}
    total = sum(totals.values()) // batch
    return (total, per_image) if per_layer else total
