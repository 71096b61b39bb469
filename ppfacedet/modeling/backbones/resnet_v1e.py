"""ResNet-V1e trunk of SCRFD-2.5GF / 10GF / 34GF.

V1e = the "bag of tricks" V1d (three-conv deep stem, average-pool shortcut on
downsampling) with the stem's 3x3/2 max pool replaced by a 2x2/2 one. Depths
and widths are free (``stage_blocks``/``stage_planes``), as SCRFD's searched
variants need. Sub-layer names follow mmdet (``stem.0``, ``layer1.0.conv1``,
``layer2.0.downsample.1``), so a checkpoint maps by name.
"""
import paddle.nn as nn

from ...core.errors import ConfigError
from ...core.registry import BACKBONES


def batch_norm(channels):
    return nn.BatchNorm2D(channels, momentum=0.9, epsilon=1e-5)


def conv3x3(in_channels, out_channels, stride=1):
    return nn.Conv2D(in_channels, out_channels, 3, stride, padding=1, bias_attr=False)


class BasicBlock(nn.Layer):
    expansion = 1

    def __init__(self, in_channels, planes, stride, downsample):
        super().__init__()
        self.conv1 = conv3x3(in_channels, planes, stride)
        self.bn1 = batch_norm(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = batch_norm(planes)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = self.downsample(x) if self.downsample is not None else x
        return self.relu(out + identity)


class Bottleneck(nn.Layer):
    """1x1 -> 3x3 (carries the stride, "pytorch" style) -> 1x1 x4."""
    expansion = 4

    def __init__(self, in_channels, planes, stride, downsample):
        super().__init__()
        self.conv1 = nn.Conv2D(in_channels, planes, 1, bias_attr=False)
        self.bn1 = batch_norm(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = batch_norm(planes)
        self.conv3 = nn.Conv2D(planes, planes * self.expansion, 1, bias_attr=False)
        self.bn3 = batch_norm(planes * self.expansion)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = self.downsample(x) if self.downsample is not None else x
        return self.relu(out + identity)


BLOCKS = {"BasicBlock": BasicBlock, "Bottleneck": Bottleneck}


def shortcut(in_channels, out_channels, stride):
    """Average-pool then 1x1 conv-bn (indices 0, 1, 2), so no input pixel is skipped."""
    return nn.Sequential(
        nn.AvgPool2D(stride, stride, ceil_mode=True, exclusive=True),
        nn.Conv2D(in_channels, out_channels, 1, bias_attr=False),
        batch_norm(out_channels))


@BACKBONES.register
class ResNetV1e(nn.Layer):
    """Returns the outputs of the stages in ``out_indices`` (strides 4, 8, 16, 32)."""

    def __init__(self, block="BasicBlock", stage_blocks=(3, 5, 3, 2), stage_planes=(24, 48, 48, 80),
                 stem_channels=24, out_indices=(0, 1, 2, 3)):
        super().__init__()
        if block not in BLOCKS:
            raise ConfigError(f"ResNetV1e: block '{block}' is not one of {', '.join(BLOCKS)}")
        if len(stage_blocks) != len(stage_planes):
            raise ConfigError(f"ResNetV1e: stage_blocks {list(stage_blocks)} and stage_planes "
                              f"{list(stage_planes)} must have the same length")
        if any(i not in range(len(stage_blocks)) for i in out_indices):
            raise ConfigError(f"ResNetV1e: out_indices {list(out_indices)} must be within "
                              f"0..{len(stage_blocks) - 1}")
        block_cls = BLOCKS[block]
        half = stem_channels // 2
        self.stem = nn.Sequential(
            conv3x3(3, half, 2), batch_norm(half), nn.ReLU(),
            conv3x3(half, half), batch_norm(half), nn.ReLU(),
            conv3x3(half, stem_channels), batch_norm(stem_channels), nn.ReLU())
        self.maxpool = nn.MaxPool2D(2, 2)
        self.out_indices = tuple(out_indices)
        self.stages = []
        channels = stem_channels
        for i, (blocks, planes) in enumerate(zip(stage_blocks, stage_planes)):
            stride = 1 if i == 0 else 2
            out = planes * block_cls.expansion
            layers = []
            for n in range(blocks):
                s = stride if n == 0 else 1
                down = shortcut(channels, out, s) if n == 0 and (s != 1 or channels != out) else None
                layers.append(block_cls(channels, planes, s, down))
                channels = out
            layer = nn.Sequential(*layers)
            self.add_sublayer(f"layer{i + 1}", layer)
            self.stages.append(layer)
        self.out_channels = [stage_planes[i] * block_cls.expansion for i in self.out_indices]

    def forward(self, x):
        x = self.maxpool(self.stem(x))
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                outs.append(x)
        return outs
