"""The MobileNetV1-style trunk of SCRFD-0.5GF / 1GF.

Layout (as in the official ``MobileNetV1`` with ``block_cfg``): a stem of a
stride-2 3x3 conv-bn-relu and one depthwise-separable block, then four stages
whose first block has stride 2. With six ``stage_planes`` p0..p5, the stem maps
3 -> p0 -> p1 and stage i maps p(i+1) -> p(i+2). Sub-layer names follow the
official module (``stem.0.0``, ``layer1.0.3``), so a checkpoint maps by name.
"""
import paddle.nn as nn

from ...core.errors import ConfigError
from ...core.registry import BACKBONES


def conv_bn_relu(in_channels, out_channels, stride):
    return nn.Sequential(
        nn.Conv2D(in_channels, out_channels, 3, stride, padding=1, bias_attr=False),
        nn.BatchNorm2D(out_channels, momentum=0.9, epsilon=1e-5),
        nn.ReLU())


def depthwise_separable(in_channels, out_channels, stride):
    """Indices 0-2: 3x3 depthwise conv-bn-relu; 3-5: 1x1 pointwise conv-bn-relu."""
    return nn.Sequential(
        nn.Conv2D(in_channels, in_channels, 3, stride, padding=1, groups=in_channels, bias_attr=False),
        nn.BatchNorm2D(in_channels, momentum=0.9, epsilon=1e-5),
        nn.ReLU(),
        nn.Conv2D(in_channels, out_channels, 1, bias_attr=False),
        nn.BatchNorm2D(out_channels, momentum=0.9, epsilon=1e-5),
        nn.ReLU())


@BACKBONES.register
class SCRFDMobileNet(nn.Layer):
    """Returns the outputs of the stages in ``out_indices`` (strides 4, 8, 16, 32)."""

    def __init__(self, stage_blocks=(2, 3, 2, 6), stage_planes=(16, 16, 40, 72, 152, 288),
                 out_indices=(0, 1, 2, 3)):
        super().__init__()
        if len(stage_blocks) != 4 or len(stage_planes) != 6:
            raise ConfigError(f"SCRFDMobileNet: expected 4 stage_blocks and 6 stage_planes, got "
                              f"{list(stage_blocks)} and {list(stage_planes)}")
        if any(i not in range(4) for i in out_indices):
            raise ConfigError(f"SCRFDMobileNet: out_indices {list(out_indices)} must be within 0..3")
        self.out_indices = tuple(out_indices)
        self.stem = nn.Sequential(conv_bn_relu(3, stage_planes[0], 2),
                                  depthwise_separable(stage_planes[0], stage_planes[1], 1))
        self.stages = []
        for i, blocks in enumerate(stage_blocks):
            cin, cout = stage_planes[i + 1], stage_planes[i + 2]
            layer = nn.Sequential(*[depthwise_separable(cin if n == 0 else cout, cout, 2 if n == 0 else 1)
                                    for n in range(blocks)])
            self.add_sublayer(f"layer{i + 1}", layer)
            self.stages.append(layer)
        self.out_channels = [stage_planes[i + 2] for i in self.out_indices]

    def forward(self, x):
        x = self.stem(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                outs.append(x)
        return outs
