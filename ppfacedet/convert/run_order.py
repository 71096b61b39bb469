"""The order a forward pass runs a model's layers in.

BN-folded ONNX exports name few of their weights, but their Conv nodes come
in the order the official forward runs them; recording our model's run order
lets a converter pair the two without a per-layer name table.
"""
import paddle


def layers_in_run_order(model, types, skip_prefix=None, input_size=64):
    """[(name, layer)] of the sublayers of the given types, in the order one
    forward pass on a zero image runs them (a shared layer once per call)."""
    order, hooks = [], []
    for name, layer in model.named_sublayers():
        if isinstance(layer, types) and not (skip_prefix and name.startswith(skip_prefix)):
            hooks.append(layer.register_forward_post_hook(
                lambda lyr, inputs, output, name=name: order.append((name, lyr))))
    was_training = model.training
    model.eval()
    try:
        with paddle.no_grad():
            model(paddle.zeros([1, 3, input_size, input_size]))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return order
