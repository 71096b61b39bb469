"""export/onnx_rewrites.py: each rewrite fires on the pattern paddle2onnx
writes for our models, leaves everything else alone, and changes no output."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from ppfacedet.export.onnx_rewrites import optimize  # noqa: E402


def tensor(name, array):
    return numpy_helper.from_array(np.asarray(array, np.float32), name)


def conv(name, x, w, b=None, **attrs):
    return helper.make_node("Conv", [x, w] + ([b] if b else []), [name], name=name, **attrs)


def head_graph(opset):
    """A small detector in paddle2onnx's style: conv + bias Add + Identity, the
    nearest upsample as a ones depthwise ConvTranspose, a learned ConvTranspose,
    SCRFD-like sibling 3x3 heads read through NHWC Transposes, YuNet-like 1x1
    siblings each followed by its own depthwise 3x3."""
    rng = np.random.RandomState(0)
    inits = [tensor("w_stem", rng.randn(4, 3, 3, 3)), tensor("b_stem", rng.randn(1, 4, 1, 1)),
             tensor("w_up", np.ones((4, 1, 2, 2))), tensor("w_learned", rng.randn(4, 1, 2, 2)),
             numpy_helper.from_array(np.array([0, -1], np.int64), "flat")]
    nodes = [conv("stem", "image", "w_stem", strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["stem", "b_stem"], ["stem_b"]),
             helper.make_node("Identity", ["stem_b"], ["feat"]),
             helper.make_node("ConvTranspose", ["feat", "w_up"], ["up"], name="up", group=4, kernel_shape=[2, 2],
                              strides=[2, 2]),
             helper.make_node("ConvTranspose", ["feat", "w_learned"], ["learned"], name="learned", group=4,
                              kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Add", ["up", "learned"], ["p"])]
    outputs = []
    for name, channels in (("score", 2), ("bbox", 8), ("kps", 4)):  # 3x3 heads on p, NHWC then flattened
        inits += [tensor(f"w_{name}", rng.randn(channels, 4, 3, 3)), tensor(f"b_{name}", rng.randn(1, channels, 1, 1))]
        nodes += [conv(f"{name}_conv", "p", f"w_{name}", pads=[1, 1, 1, 1]),
                  helper.make_node("Add", [f"{name}_conv", f"b_{name}"], [f"{name}_b"]),
                  helper.make_node("Transpose", [f"{name}_b"], [f"{name}_t"], perm=[0, 2, 3, 1]),
                  helper.make_node("Reshape", [f"{name}_t", "flat"], [name])]
        outputs.append((name, 2))
    for name, channels in (("cls", 1), ("obj", 1), ("box", 4)):  # YuNet's ConvDPUnit heads
        inits += [tensor(f"pw_{name}", rng.randn(channels, 4, 1, 1)), tensor(f"pb_{name}", rng.randn(channels)),
                  tensor(f"dw_{name}", rng.randn(channels, 1, 3, 3)), tensor(f"db_{name}", rng.randn(channels))]
        nodes += [conv(f"{name}_pw", "feat", f"pw_{name}", f"pb_{name}"),
                  conv(f"{name}_dw", f"{name}_pw", f"dw_{name}", f"db_{name}", group=channels, pads=[1, 1, 1, 1]),
                  helper.make_node("Transpose", [f"{name}_dw"], [name], perm=[0, 2, 3, 1])]
        outputs.append((name, 4))
    dynamic = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 3, "h", "w"])
    graph = helper.make_graph(nodes, "g", [dynamic], [helper.make_tensor_value_info(o, TensorProto.FLOAT, [None] * rank)
                                                      for o, rank in outputs], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def run(model, batch):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return [o.name for o in session.get_outputs()], session.run(None, {"image": batch})


@pytest.mark.parametrize("opset", [11, 13])
def test_rewrites_keep_outputs_and_names(opset):
    model = head_graph(opset)
    before = onnx.ModelProto()
    before.CopyFrom(model)
    counts = optimize(model)
    onnx.checker.check_model(model)
    assert counts == {"drop_identities": 1, "fold_conv_bias_adds": 4, "upsample_by_resize": 1,
                      "merge_sibling_convs": 6, "merge_split_depthwise": 3}
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("ConvTranspose") == 1 and ops.count("Resize") == 1  # the learned one stays
    assert ops.count("Conv") == 4 and "Identity" not in ops  # stem, heads, YuNet pointwise, YuNet depthwise
    assert ops.count("Transpose") == 2  # one per merged head group, before its Split
    rng = np.random.RandomState(1)
    for shape in ((1, 3, 16, 24), (2, 3, 14, 10)):
        batch = (rng.randn(*shape) * 50).astype(np.float32)
        names, expected = run(before, batch)
        got_names, got = run(model, batch)
        assert got_names == names
        for name, g, e in zip(names, got, expected):
            assert g.shape == e.shape and float(np.abs(g - e).max()) <= 1e-4 * max(1.0, float(np.abs(e).max())), name


def test_unmatched_patterns_are_left_alone():
    """A ones ConvTranspose that is not the 2x nearest form, and convs that
    share an input but not their geometry, are not rewritten."""
    rng = np.random.RandomState(0)
    inits = [tensor("ones3", np.ones((2, 1, 3, 3))), tensor("wa", rng.randn(2, 2, 3, 3)),
             tensor("wb", rng.randn(2, 2, 1, 1)), tensor("ba", rng.randn(2)), tensor("bb", rng.randn(2))]
    nodes = [helper.make_node("ConvTranspose", ["image", "ones3"], ["t"], group=2, kernel_shape=[3, 3],
                              strides=[2, 2]),
             conv("a", "image", "wa", "ba", pads=[1, 1, 1, 1]), conv("b", "image", "wb", "bb"),
             helper.make_node("Relu", ["a"], ["ra"]), helper.make_node("Relu", ["b"], ["rb"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 2, 4, 4])],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, [None] * 4) for o in ("t", "ra", "rb")],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    assert optimize(model) == {"drop_identities": 0, "fold_conv_bias_adds": 0, "upsample_by_resize": 0,
                               "merge_sibling_convs": 0, "merge_split_depthwise": 0}
    assert [n.op_type for n in model.graph.node] == ["ConvTranspose", "Conv", "Conv", "Relu", "Relu"]
