"""ResNet trunk with torchvision's layout and parameter names (``conv1``,
``bn1``, ``layer1.0.conv1`` ..., stride on the 3x3 conv), so torchvision-based
checkpoints such as RetinaFace-R50's ``body`` import by prefix rename.
paddle.vision's ResNet uses the same names; PaddleClas's are mapped by
``pretrained_name``."""
import re

import paddle.nn as nn

from ...core.registry import BACKBONES

# Bottleneck blocks per stage.
_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
# PaddleClas's ResNet ("vb", ppcls/arch/backbone/legendary_models/resnet.py): a
# one-conv ``stem``, then every bottleneck in one ``blocks`` list with
# ConvBNLayers conv0/conv1/conv2 (1x1, strided 3x3, 1x1) and ``short``.
_PADDLECLAS_STEM = re.compile(r"stem\.0\.(conv|bn)\.(\w+)")
_PADDLECLAS_BLOCK = re.compile(r"blocks\.(\d+)\.(conv0|conv1|conv2|short)\.(conv|bn)\.(\w+)")


class Bottleneck(nn.Layer):
    expansion = 4

    def __init__(self, in_channels, width, stride):
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2D(in_channels, width, 1, bias_attr=False)
        self.bn1 = nn.BatchNorm2D(width)
        self.conv2 = nn.Conv2D(width, width, 3, stride, padding=1, bias_attr=False)
        self.bn2 = nn.BatchNorm2D(width)
        self.conv3 = nn.Conv2D(width, out_channels, 1, bias_attr=False)
        self.bn3 = nn.BatchNorm2D(out_channels)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(nn.Conv2D(in_channels, out_channels, 1, stride, bias_attr=False),
                                            nn.BatchNorm2D(out_channels))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


@BACKBONES.register
class ResNet(nn.Layer):
    """Returns [C3, C4, C5] = outputs of layer2/3/4 (strides 8, 16, 32)."""

    def __init__(self, depth=50):
        super().__init__()
        if depth not in _DEPTHS:
            raise ValueError(f"ResNet: depth {depth} is not supported; valid: {sorted(_DEPTHS)}")
        self.conv1 = nn.Conv2D(3, 64, 7, 2, padding=3, bias_attr=False)
        self.bn1 = nn.BatchNorm2D(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2D(3, 2, padding=1)
        channels = 64
        stages, self.out_channels = [], []
        for index, blocks in enumerate(_DEPTHS[depth]):
            width = 64 * 2 ** index
            layers = []
            for block in range(blocks):
                stride = 2 if index > 0 and block == 0 else 1
                layers.append(Bottleneck(channels, width, stride))
                channels = width * Bottleneck.expansion
            stages.append(nn.Sequential(*layers))
            if index > 0:
                self.out_channels.append(channels)
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self._blocks = _DEPTHS[depth]

    def pretrained_name(self, name):
        """Our name for a tensor of PaddleClas's ImageNet ResNet, or None."""
        stem = _PADDLECLAS_STEM.fullmatch(name)
        if stem:
            return f"{'conv1' if stem[1] == 'conv' else 'bn1'}.{stem[2]}"
        block = _PADDLECLAS_BLOCK.fullmatch(name)
        if not block:
            return None
        index = int(block[1])
        for stage, blocks in enumerate(self._blocks):
            if index < blocks:
                break
            index -= blocks
        else:
            return None
        if block[2] == "short":
            inner = f"downsample.{0 if block[3] == 'conv' else 1}"
        else:
            inner = f"{block[3]}{int(block[2][-1]) + 1}"
        return f"layer{stage + 1}.{index}.{inner}.{block[4]}"

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c3 = self.layer2(self.layer1(x))
        c4 = self.layer3(c3)
        return [c3, c4, self.layer4(c4)]
