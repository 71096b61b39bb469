"""BiasConv2D computes what nn.Conv2D computes, bit for bit, forward and
backward, and leaves static graphs the standard conv + bias."""
import numpy as np
import paddle
import paddle.nn as nn
import pytest

from ppfacedet.modeling.layers import BiasConv2D


@pytest.mark.parametrize("cin, cout, kernel, stride, groups", [(3, 16, 3, 2, 1), (16, 64, 1, 1, 1), (64, 64, 3, 1, 64)])
def test_outputs_and_gradients_equal_conv2d(cin, cout, kernel, stride, groups):
    rng = np.random.RandomState(0)
    ours = BiasConv2D(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups)
    theirs = nn.Conv2D(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups)
    theirs.weight.set_value(ours.weight.numpy())
    theirs.bias.set_value(rng.randn(cout).astype("float32"))
    ours.bias.set_value(theirs.bias.numpy())
    x = rng.randn(2, cin, 23, 31).astype("float32")
    upstream = rng.randn(*theirs(paddle.to_tensor(x)).shape).astype("float32")
    grads = []
    for conv in (ours, theirs):
        inp = paddle.to_tensor(x, stop_gradient=False)
        out = conv(inp)
        (out * paddle.to_tensor(upstream)).sum().backward()
        grads.append([out.numpy(), inp.grad.numpy(), conv.weight.grad.numpy(), conv.bias.grad.numpy()])
    for name, a, b in zip(("output", "input grad", "weight grad", "bias grad"), *grads):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 if name == "bias grad" else 0, err_msg=name)


def static_ops(layer):
    spec = [paddle.static.InputSpec([None, 3, None, None], "float32")]
    static = paddle.jit.to_static(layer, input_spec=spec, full_graph=True)
    x = paddle.rand([1, 3, 16, 16])
    np.testing.assert_array_equal(static(x).numpy(), layer(x).numpy())
    program = static.forward.concrete_program.main_program
    return [op.name() if callable(getattr(op, "name", None)) else op.type for op in program.global_block().ops]


def test_static_graph_is_the_one_conv2d_writes():
    """Export traces nn.Conv2D's own conv + bias, the pattern inference passes fuse."""
    ops = static_ops(BiasConv2D(3, 8, 3, padding=1))
    assert "pd_op.conv2d" in ops and ops == static_ops(nn.Conv2D(3, 8, 3, padding=1))
