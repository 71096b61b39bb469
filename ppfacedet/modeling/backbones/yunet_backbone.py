"""YuNet backbone (libfacedetection.train ``YuNetBackbone``).

A stem (3x3 stride-2 conv + BN + ReLU, then one depthwise-separable unit)
followed by stages of two depthwise-separable units each; 2x2 max pools sit
after the stages listed in ``downsample_idx``. With the official settings the
stages listed in ``out_idx`` come out at strides 8, 16 and 32.

Layer names (``model0.conv1``, ``model1.conv2.bn``, ...) follow the official
checkpoint so weights map across by renaming BN buffers only.
"""
import paddle.nn as nn
import paddle.nn.functional as F

from ...core.errors import ConfigError
from ...core.registry import BACKBONES
from ..layers import BiasConv2D


def _conv(in_channels, out_channels, kernel_size, stride=1, groups=1):
    """Conv with bias, initialised as the official code does (Xavier-normal
    weights, bias 0.02)."""
    return BiasConv2D(in_channels, out_channels, kernel_size, stride=stride,
                      padding=kernel_size // 2, groups=groups,
                      weight_attr=nn.initializer.XavierNormal(),
                      bias_attr=nn.initializer.Constant(0.02))


class ConvDPUnit(nn.Layer):
    """1x1 conv then 3x3 depthwise conv, optionally followed by BN + ReLU
    (the official ``ConvDPUnit``; prediction layers use it without BN/ReLU)."""

    def __init__(self, in_channels, out_channels, with_bn_relu=True):
        super().__init__()
        self.conv1 = _conv(in_channels, out_channels, 1)
        self.conv2 = _conv(out_channels, out_channels, 3, groups=out_channels)
        self.with_bn_relu = with_bn_relu
        if with_bn_relu:
            self.bn = nn.BatchNorm2D(out_channels)

    def forward(self, x):
        x = self.conv2(self.conv1(x))
        if self.with_bn_relu:
            x = F.relu(self.bn(x))
        return x


class ConvStem(nn.Layer):
    """The official ``Conv_head``: 3x3 stride-2 conv + BN + ReLU, then a ConvDPUnit."""

    def __init__(self, in_channels, mid_channels, out_channels):
        super().__init__()
        self.conv1 = _conv(in_channels, mid_channels, 3, stride=2)
        self.bn1 = nn.BatchNorm2D(mid_channels)
        self.conv2 = ConvDPUnit(mid_channels, out_channels)

    def forward(self, x):
        return self.conv2(F.relu(self.bn1(self.conv1(x))))


class Conv4LayerBlock(nn.Layer):
    """Two ConvDPUnits (the official ``Conv4layerBlock``)."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv1 = ConvDPUnit(in_channels, in_channels)
        self.conv2 = ConvDPUnit(in_channels, out_channels)

    def forward(self, x):
        return self.conv2(self.conv1(x))


@BACKBONES.register
class YuNetBackbone(nn.Layer):
    """stage_channels: ``[[in, mid, out], [in, out], ...]`` — the first entry is
    the stem, the others are Conv4LayerBlocks."""

    def __init__(self, stage_channels, downsample_idx=(0, 2, 3, 4), out_idx=(3, 4, 5)):
        super().__init__()
        if not stage_channels or len(stage_channels[0]) != 3:
            raise ConfigError(f"model.backbone.stage_channels: the first entry must be the stem's "
                              f"[in, mid, out], got {stage_channels!r}")
        if any(len(c) != 2 for c in stage_channels[1:]):
            raise ConfigError(f"model.backbone.stage_channels: entries after the stem must be "
                              f"[in, out], got {stage_channels!r}")
        bad = [i for i in out_idx if not 0 <= i < len(stage_channels)]
        if bad:
            raise ConfigError(f"model.backbone.out_idx: {bad} outside 0..{len(stage_channels) - 1}")
        self.downsample_idx = set(downsample_idx)
        self.out_idx = list(out_idx)
        self.stages = []
        for i, channels in enumerate(stage_channels):
            stage = ConvStem(*channels) if i == 0 else Conv4LayerBlock(*channels)
            self.add_sublayer(f"model{i}", stage)
            self.stages.append(stage)
        self.out_channels = [stage_channels[i][-1] for i in self.out_idx]

    def forward(self, x):
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_idx:
                outs.append(x)
            if i in self.downsample_idx:
                x = F.max_pool2d(x, kernel_size=2, stride=2)
        return outs
