"""Exact rewrites of paddle2onnx's graph into the form CPU engines run fastest.

The Paddle program keeps the forms Paddle Inference's oneDNN needs (DESIGN.md);
``model.onnx`` need not. Each rewrite computes the same numbers:

  drop_identities      paddle2onnx writes an Identity after most ops; removing
                       them lets the patterns below see producer -> consumer.
  fold_conv_bias_adds  Conv -> Add(constant [1,C,1,1]) becomes Conv with a bias.
  upsample_by_resize   the nearest 2x upsample (modeling/layers.py: a depthwise
                       ConvTranspose with a 2x2 kernel of ones, stride 2) becomes
                       Resize nearest x2 (asymmetric, floor): out[i] = in[i // 2]
                       in both. onnxruntime's grouped ConvTranspose has no NCHWc
                       kernel; Resize is what the official exports use.
  merge_sibling_convs  convs reading the same tensor with the same geometry
                       (SCRFD's and YuNet's per-stride score/box/landmark
                       heads) become one conv with their filters stacked,
                       then a Split back into the original tensors: one pass
                       over the input instead of three, and output channels
                       padded to the engine's block (8) once instead of per conv.
  merge_split_depthwise  a channel Split whose parts each go through a
                       depthwise conv of one geometry (YuNet's heads, after the
                       stacking above) becomes one depthwise conv, then the Split.

``optimize`` applies them in that order and keeps graph inputs, outputs and
their names (the deploy contract) unchanged.
"""
import numpy as np

ONES_UPSAMPLE = {"kernel_shape": [2, 2], "strides": [2, 2]}


def optimize(model):
    """Rewrite ``model`` (onnx ModelProto) in place; returns {rewrite: count}."""
    counts = {rewrite.__name__: rewrite(model) for rewrite in
              (drop_identities, fold_conv_bias_adds, upsample_by_resize, merge_sibling_convs,
               merge_split_depthwise)}
    _drop_unused_initializers(model)
    return counts


def _attrs(node):
    from onnx import helper
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _initializers(model):
    return {t.name: t for t in model.graph.initializer}


def readers_of(model):
    """{tensor name: [nodes reading it]} of an onnx ModelProto."""
    readers = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


def producers_of(model):
    """{tensor name: the node writing it} of an onnx ModelProto."""
    return {o: n for n in model.graph.node for o in n.output}


def _opset(model):
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _replace_tensor(model, old, new):
    for node in model.graph.node:
        node.input[:] = [new if name == old else name for name in node.input]


def drop_identities(model):
    graph_outputs = {o.name for o in model.graph.output}
    dropped = [n for n in model.graph.node if n.op_type == "Identity" and n.output[0] not in graph_outputs]
    for node in dropped:
        model.graph.node.remove(node)
        _replace_tensor(model, node.output[0], node.input[0])
    return len(dropped)


def fold_conv_bias_adds(model):
    from onnx import numpy_helper
    inits, readers, producers = _initializers(model), readers_of(model), producers_of(model)
    graph_outputs = {o.name for o in model.graph.output}
    folded = 0
    for add in [n for n in model.graph.node if n.op_type == "Add"]:
        conv = producers.get(add.input[0])
        bias = inits.get(add.input[1])
        if (conv is None or conv.op_type != "Conv" or len(conv.input) > 2 or bias is None
                or len(readers[conv.output[0]]) != 1 or conv.output[0] in graph_outputs):
            continue
        weight = inits.get(conv.input[1])
        values = numpy_helper.to_array(bias)
        channels = weight.dims[0] if weight is not None else None
        if channels is None or values.size != channels or values.shape not in ((1, channels, 1, 1), (channels, 1, 1)):
            continue
        bias_name = add.input[1] + "_as_conv_bias"
        model.graph.initializer.append(numpy_helper.from_array(values.reshape(channels), bias_name))
        conv.input.append(bias_name)
        conv.output[0] = add.output[0]
        model.graph.node.remove(add)
        folded += 1
    return folded


def _is_nearest_upsample(node, inits):
    from onnx import numpy_helper
    if node.op_type != "ConvTranspose" or len(node.input) != 2 or node.input[1] not in inits:
        return False
    attrs = _attrs(node)
    weight = numpy_helper.to_array(inits[node.input[1]])
    return (all(attrs.get(k) == v for k, v in ONES_UPSAMPLE.items())
            and not any(attrs.get("pads", [0])) and not any(attrs.get("output_padding", [0]))
            and attrs.get("dilations", [1, 1]) == [1, 1] and "output_shape" not in attrs
            and attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")
            and weight.shape == (attrs.get("group", 1), 1, 2, 2) and bool(np.all(weight == 1.0)))


def upsample_by_resize(model):
    from onnx import helper, numpy_helper
    inits = _initializers(model)
    nodes = [n for n in model.graph.node if _is_nearest_upsample(n, inits)]
    if not nodes:
        return 0
    roi, scales = "nearest2x_roi", "nearest2x_scales"
    model.graph.initializer.extend([numpy_helper.from_array(np.zeros(0, np.float32), roi),
                                    numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), scales)])
    for node in nodes:
        resize = helper.make_node("Resize", [node.input[0], roi, scales], list(node.output), name=node.name + "_resize",
                                  mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")
        index = list(model.graph.node).index(node)
        model.graph.node.remove(node)
        model.graph.node.insert(index, resize)
    return len(nodes)


def _geometry(node, *ignored):
    return tuple(sorted((k, str(v)) for k, v in _attrs(node).items() if k not in ignored))


def merge_sibling_convs(model):
    """Stack the filters of plain (group 1) convs that share their input."""
    inits = _initializers(model)
    graph_outputs = {o.name for o in model.graph.output}
    siblings = {}
    for node in model.graph.node:
        if (node.op_type == "Conv" and _attrs(node).get("group", 1) == 1 and len(node.input) == 3
                and all(name in inits for name in node.input[1:]) and node.output[0] not in graph_outputs):
            siblings.setdefault((node.input[0], _geometry(node)), []).append(node)
    groups = [convs for convs in siblings.values() if len(convs) > 1]
    for convs in groups:
        _stack(model, convs, convs[0].input[0], [], group=1)
    return sum(len(convs) for convs in groups)


def merge_split_depthwise(model):
    """A channel Split whose every part goes through its own depthwise conv of
    the same geometry (YuNet's heads, after merge_sibling_convs) becomes one
    depthwise conv over the whole tensor, then the Split."""
    inits, readers = _initializers(model), readers_of(model)
    graph_outputs = {o.name for o in model.graph.output}
    merged = 0
    for split in [n for n in model.graph.node if n.op_type == "Split" and _attrs(n).get("axis") == 1]:
        convs = [readers.get(name, []) for name in split.output]
        if not all(len(r) == 1 and r[0].op_type == "Conv" and len(r[0].input) == 3 for r in convs):
            continue
        convs = [r[0] for r in convs]
        weights = [inits.get(c.input[1]) for c in convs]
        if (any(w is None or c.input[2] not in inits or w.dims[1] != 1 or _attrs(c).get("group") != w.dims[0]
                for c, w in zip(convs, weights))
                or len({_geometry(c, "group") for c in convs}) != 1
                or any(c.output[0] in graph_outputs for c in convs)):
            continue
        _stack(model, convs, split.input[0], [split], group=sum(w.dims[0] for w in weights))
        merged += len(convs)
    return merged


def _stack(model, convs, input_name, removed, group):
    """Replace ``convs`` (and ``removed``) by one conv with their filters and
    biases stacked, reading ``input_name``, then a Split into their outputs.

    When every conv is read only by the same NCHW -> NHWC Transpose (the heads'
    layout before their Reshape), the split moves after one Transpose of the
    stacked output, which engines fuse into the conv's output reorder."""
    from onnx import helper, numpy_helper
    inits, readers = _initializers(model), readers_of(model)
    name = convs[0].name + "_merged"
    for suffix, index in (("_w", 1), ("_b", 2)):
        stacked = np.concatenate([numpy_helper.to_array(inits[c.input[index]]) for c in convs])
        model.graph.initializer.append(numpy_helper.from_array(stacked, name + suffix))
    attrs = dict(_attrs(convs[0]), group=group)
    new_nodes = [helper.make_node("Conv", [input_name, name + "_w", name + "_b"], [name + "_out"], name=name,
                                  **attrs)]
    transposes = [readers.get(c.output[0], []) for c in convs]
    to_nhwc = all(len(t) == 1 and t[0].op_type == "Transpose" and _attrs(t[0]).get("perm") == [0, 2, 3, 1]
                  for t in transposes)
    removed = list(removed) + list(convs) + ([t[0] for t in transposes] if to_nhwc else [])
    split_input, axis, outputs = name + "_out", 1, [c.output[0] for c in convs]
    if to_nhwc:
        split_input, axis, outputs = name + "_nhwc", 3, [t[0].output[0] for t in transposes]
        new_nodes.append(helper.make_node("Transpose", [name + "_out"], [split_input], name=split_input,
                                          perm=[0, 2, 3, 1]))
    sizes = [inits[c.input[1]].dims[0] for c in convs]
    if _opset(model) >= 13:
        model.graph.initializer.append(numpy_helper.from_array(np.array(sizes, np.int64), name + "_sizes"))
        new_nodes.append(helper.make_node("Split", [split_input, name + "_sizes"], outputs, name=name + "_split",
                                          axis=axis))
    else:
        new_nodes.append(helper.make_node("Split", [split_input], outputs, name=name + "_split", axis=axis,
                                          split=sizes))
    # In the first replaced node's place: the input is ready there, and every
    # reader of a replaced node comes later.
    index = min(list(model.graph.node).index(n) for n in removed)
    for node in removed:
        model.graph.node.remove(node)
    for node in reversed(new_nodes):
        model.graph.node.insert(index, node)


def _drop_unused_initializers(model):
    used = {name for node in model.graph.node for name in node.input}
    for tensor in [t for t in model.graph.initializer if t.name not in used]:
        model.graph.initializer.remove(tensor)
