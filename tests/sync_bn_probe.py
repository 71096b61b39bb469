"""Run under paddle.distributed.launch by test_distributed.py: a conv/BatchNorm
network with parallel branches takes three SGD steps on 8 fixed images, split
evenly over the processes, with sync_bn's BatchNorm; one process keeps
Paddle's own BatchNorm. Both follow torch's running variance, as the trainer
makes them. Every rank saves its parameters and BN statistics, and each
BatchNorm's input at every step with its running variance before the first."""
import itertools
import sys

import numpy as np
import paddle
import paddle.distributed as dist
import paddle.nn as nn

sys.path.insert(0, sys.argv[2])
from ppfacedet.engine.batchnorm_stats import follow_torch_running_variance  # noqa: E402
from ppfacedet.engine.sync_batchnorm import convert_sync_batchnorm  # noqa: E402


def conv_bn(cin, cout, stride=1):
    return nn.Sequential(nn.Conv2D(cin, cout, 3, stride, padding=1), nn.BatchNorm2D(cout), nn.ReLU())


class Net(nn.Layer):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 8)
        self.left, self.right = conv_bn(8, 8, 2), nn.Sequential(conv_bn(8, 4), conv_bn(4, 8, 2))
        self.out = nn.Sequential(nn.Conv2D(8, 4, 1), nn.BatchNorm2D(4))

    def forward(self, x):
        x = self.stem(x)
        return self.out(self.left(x) + self.right(x))


def record_batchnorm_inputs(model):
    """{"<layer>|v0": running variance now, "<layer>|<call>": input at each call} for every BatchNorm."""
    record = {}
    for name, layer in model.named_sublayers():
        if isinstance(layer, nn.layer.norm._BatchNormBase):
            record[f"{name}|v0"] = layer._variance.numpy().copy()
            calls = itertools.count()
            layer.register_forward_pre_hook(
                lambda layer, x, name=name, calls=calls: record.update({f"{name}|{next(calls)}": x[0].numpy()}))
    return record


world = dist.get_world_size()
if world > 1:
    dist.init_parallel_env()
paddle.seed(0)
model = Net()
rng = np.random.default_rng(0)
images = rng.normal(1.0, 2.0, (8, 3, 16, 16)).astype("float32")
targets = rng.normal(0.0, 1.0, (8, 4, 8, 8)).astype("float32")
share = slice(dist.get_rank() * 8 // world, (dist.get_rank() + 1) * 8 // world)
if world > 1:
    convert_sync_batchnorm(model)
follow_torch_running_variance(model)  # both as the trainer makes them
inputs = record_batchnorm_inputs(model)
net = paddle.DataParallel(model) if world > 1 else model
optimizer = paddle.optimizer.Momentum(0.05, momentum=0.9, parameters=model.parameters())
for _ in range(3):
    out = net(paddle.to_tensor(images[share]))
    # the mean over all 8 images: each process's share of it, averaged by DataParallel
    loss = ((out - paddle.to_tensor(targets[share])) ** 2).mean()
    loss.backward()
    optimizer.step()
    optimizer.clear_grad()
np.savez(f"{sys.argv[1]}{dist.get_rank()}.npz", **{k: v.numpy() for k, v in model.state_dict().items()})
np.savez(f"{sys.argv[1]}{dist.get_rank()}_inputs.npz", **inputs)
