"""Old-IR (``FLAGS_enable_pir_api=0``) stand-ins for ops Paddle 3.3 only builds for PIR.

In Paddle 3.3.1 ``paddle.maximum``, ``paddle.minimum`` and the ``paddle.logical_*``
functions call the PIR-only ``_C_ops`` directly, so tracing a model into the
old ProgramDesc fails with ``argument (position 1) must be Value, but got
Variable``. dy2static also emits ``paddle.logical_or`` for a Python ``or`` of
two shape comparisons. While ``legacy_static_ops()`` is active these names
append the equivalent old operators (``elementwise_max``, ``logical_or``...)
instead; outside old static mode they call the original function.

Convolution biases get the same treatment for speed: the old IR writes a
conv's bias as ``reshape2(bias) -> elementwise_add(axis=-1)``, which the
inference passes (``conv_bias_mkldnn_fuse_pass``, ``conv_elementwise_add_fuse_pass``)
do not recognise, so every biased conv ran as conv + separate add, and the
residual adds after it could not fuse either. The stand-in writes the form
those passes match, ``elementwise_add(X=conv, Y=1-D bias, axis=1)``: the same
sum, and SCRFD-500M's legacy program runs about 6% faster under oneDNN.
"""
import contextlib
import inspect

import paddle
from paddle.base.layer_helper import LayerHelper

# paddle function -> old operator; all take X (and Y) and write Out.
BINARY = {"maximum": "elementwise_max", "minimum": "elementwise_min", "multiply": "elementwise_mul",
          "logical_or": "logical_or", "logical_and": "logical_and", "logical_xor": "logical_xor",
          "greater_than": "greater_than"}
UNARY = ("sigmoid", "exp", "sqrt", "rsqrt", "log", "abs", "floor", "ceil", "tanh", "round", "logical_not")
BOOL_RESULT = ("logical_or", "logical_and", "logical_xor", "greater_than", "logical_not")
# Where models find these functions (paddle.X, F.X, paddle.tensor.X).
MODULES = (paddle, paddle.nn.functional, paddle.tensor)


def _in_legacy_static():
    return not paddle.in_dynamic_mode() and not paddle.framework.use_pir_api()


def _append(op_type, inputs, like):
    helper = LayerHelper(op_type)
    dtype = paddle.bool if op_type in BOOL_RESULT else like.dtype
    out = helper.create_variable_for_type_inference(dtype=dtype)
    attrs = {"axis": -1} if op_type.startswith("elementwise_") else {}
    helper.append_op(type=op_type, inputs=inputs, outputs={"Out": out}, attrs=attrs)
    return out


def _binary(op_type, original):
    def op(x, y, *args, **kwargs):
        if not _in_legacy_static():
            return original(x, y, *args, **kwargs)
        return _append(op_type, {"X": x, "Y": y}, x)
    return op


def _unary(op_type, original):
    def op(x, *args, **kwargs):
        if not _in_legacy_static():
            return original(x, *args, **kwargs)
        return _append(op_type, {"X": x}, x)
    return op


def _conv_with_channel_bias(original):
    signature = inspect.signature(original)

    def conv(*args, **kwargs):
        call = signature.bind(*args, **kwargs)
        call.apply_defaults()
        bias = call.arguments["bias"]
        if not _in_legacy_static() or bias is None or call.arguments["channel_dim"] != 1:
            return original(*args, **kwargs)
        call.arguments["bias"] = None
        pre_bias = original(*call.args, **call.kwargs)
        helper = LayerHelper("elementwise_add")
        out = helper.create_variable_for_type_inference(dtype=pre_bias.dtype)
        helper.append_op(type="elementwise_add", inputs={"X": pre_bias, "Y": bias}, outputs={"Out": out},
                         attrs={"axis": 1})
        return out
    return conv


@contextlib.contextmanager
def legacy_static_ops():
    """Swap the stand-ins into ``paddle``, ``paddle.nn.functional`` and
    ``paddle.tensor`` (and the conv helper every ``nn.Conv*`` layer calls,
    ``paddle.nn.functional.conv._conv_nd``) for the duration of a trace."""
    saved = [(module, name, getattr(module, name)) for module in MODULES
             for name in [*BINARY, *UNARY] if hasattr(module, name)]
    conv_module = paddle.nn.functional.conv
    saved.append((conv_module, "_conv_nd", conv_module._conv_nd))
    try:
        for module, name, original in saved:
            if name == "_conv_nd":
                stand_in = _conv_with_channel_bias(original)
            elif name in BINARY:
                stand_in = _binary(BINARY[name], original)
            else:
                stand_in = _unary(name, original)
            setattr(module, name, stand_in)
        yield
    finally:
        for module, name, original in saved:
            setattr(module, name, original)


def multiclass_nms3(boxes, scores, score_threshold, nms_top_k, keep_top_k, nms_threshold, normalized):
    """``_C_ops.multiclass_nms3`` (one call for both IRs) -> (out [K,6], index [K,1], counts [N])."""
    if not _in_legacy_static():
        return paddle._C_ops.multiclass_nms3(boxes, scores, None, score_threshold, nms_top_k, keep_top_k,
                                             nms_threshold, normalized, 1.0, -1)
    helper = LayerHelper("multiclass_nms3")
    out = helper.create_variable_for_type_inference(dtype=boxes.dtype)
    index = helper.create_variable_for_type_inference(dtype="int32")
    counts = helper.create_variable_for_type_inference(dtype="int32")
    helper.append_op(type="multiclass_nms3", inputs={"BBoxes": boxes, "Scores": scores},
                     outputs={"Out": out, "Index": index, "NmsRoisNum": counts},
                     attrs={"background_label": -1, "score_threshold": score_threshold, "nms_top_k": nms_top_k,
                            "nms_threshold": nms_threshold, "nms_eta": 1.0, "keep_top_k": keep_top_k,
                            "normalized": normalized})
    return out, index, counts
