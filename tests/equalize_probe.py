"""Run by test_quant.py in a process started with FLAGS_enable_pir_api=0 (the
old program format that quantization rewrites): builds a small conv / batch
norm / activation program with channels of very different ranges, equalizes
it and prints, as JSON, what the test checks."""
import json
import sys

import numpy as np
import paddle

sys.path.insert(0, sys.argv[1])
from ppfacedet.export.equalize import channel_ranges, equalization_pairs, equalize_ranges  # noqa: E402
from ppfacedet.export.legacy_ops import legacy_static_ops  # noqa: E402

paddle.enable_static()
paddle.seed(0)  # the conv weights too: unseeded, a draw now and then starts a pair near balance (1.93 once)
main, startup = paddle.static.Program(), paddle.static.Program()
main.random_seed = startup.random_seed = 0
with paddle.static.program_guard(main, startup), legacy_static_ops():
    image = paddle.static.data("image", [None, 3, None, None], "float32")
    h = paddle.nn.BatchNorm2D(8)(paddle.nn.Conv2D(3, 8, 3, padding=1)(image))
    h = paddle.maximum(h, h * 0.1)  # leaky relu, as the legacy export writes it
    h = paddle.nn.BatchNorm2D(8)(paddle.nn.Conv2D(8, 8, 3, padding=1, groups=8)(h))
    h = paddle.nn.functional.relu(h)
    shared = paddle.nn.BatchNorm2D(4)(paddle.nn.Conv2D(8, 4, 1)(h))
    out = paddle.nn.Conv2D(4, 2, 1)(shared) + paddle.nn.Conv2D(4, 2, 1)(shared)  # two readers: left alone
exe = paddle.static.Executor(paddle.CPUPlace())
exe.run(startup)
scope = paddle.static.global_scope()
rng = np.random.RandomState(0)
for op in main.global_block().ops:
    if op.type == "batch_norm":  # trained norms: channel gains spread over two orders of magnitude
        for key, low, high in (("Scale", 0.02, 5.0), ("Bias", -1.0, 1.0)):
            tensor = scope.find_var(op.input(key)[0]).get_tensor()
            tensor.set(rng.uniform(low, high, np.array(tensor).shape).astype("float32"), paddle.CPUPlace())
feeds = [{"image": rng.uniform(-1, 1, (1, 3, 12, 16)).astype("float32")} for _ in range(3)]
keep = {out.name}
pairs = equalization_pairs(main, keep)
activations = [var for _, var, _ in pairs]


def balance():
    """Per pair, the spread (max / min over live channels) of activation range
    over the reading conv's weight range: 1 when equalized."""
    ranges = channel_ranges(exe, main, activations, lambda: iter(feeds))
    spreads = []
    for _, var, conv in pairs:
        weight = np.abs(np.array(scope.find_var(conv.input("Filter")[0]).get_tensor()))
        per_input = weight.max(axis=(1, 2, 3) if conv.type == "depthwise_conv2d" else (0, 2, 3))
        live = ranges[var] > 0
        ratio = ranges[var][live] / per_input[live]
        spreads.append(float(ratio.max() / ratio.min()))
    return spreads


reference, before = exe.run(main, feed=feeds[0], fetch_list=[out])[0], balance()
count = equalize_ranges(exe, main, scope, lambda: iter(feeds), keep)
after = exe.run(main, feed=feeds[0], fetch_list=[out])[0]
print(json.dumps({"readers": [conv.type for _, _, conv in pairs], "count": count,
                  "output_change": float(np.abs(after - reference).max() / np.abs(reference).max()),
                  "balance_before": before, "balance_after": balance()}))
