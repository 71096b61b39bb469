"""MobileNetV1 trunk of RetinaFace-mnet0.25.

Sub-layers are named as in the official ``body`` (``stage1.0.0.weight``), so
importing the official checkpoint is a prefix rename. The classifier of the
ImageNet network is left out: RetinaFace only uses the three stages.
"""
import paddle
import paddle.nn as nn

from ...core.registry import BACKBONES

# (out_channels at width 1.0, stride) of each depthwise-separable block,
# grouped in the three stages whose outputs feed the FPN (strides 8, 16, 32).
_STAGES = (
    ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1)),
    ((512, 2), (512, 1), (512, 1), (512, 1), (512, 1), (512, 1)),
    ((1024, 2), (1024, 1)),
)
_STEM_CHANNELS = 32


class LeakyReLU(nn.Layer):
    """max(x, slope * x): leaky ReLU for 0 < slope < 1, written so that Paddle
    Inference's oneDNN conv+activation fusion (which crashes on leaky_relu
    under PIR in Paddle 3.3) leaves it alone. Values are bit-identical."""

    def __init__(self, slope):
        super().__init__()
        if not 0 < slope < 1:
            raise ValueError(f"LeakyReLU: slope must be in (0, 1), got {slope}")
        self.slope = slope

    def forward(self, x):
        return paddle.maximum(x, x * self.slope)


def conv_bn_act(in_channels, out_channels, kernel_size, stride=1, groups=1, slope=None):
    """Conv (no bias) + BatchNorm [+ LeakyReLU(slope)] as indices 0, 1[, 2].

    ``slope=None`` leaves the activation out; slope 0 is a plain ReLU, which is
    what the official ``LeakyReLU(0)`` computes.
    """
    layers = [nn.Conv2D(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2,
                        groups=groups, bias_attr=False),
              nn.BatchNorm2D(out_channels)]
    if slope is not None:
        layers.append(LeakyReLU(slope) if slope else nn.ReLU())
    return nn.Sequential(*layers)


def depthwise_separable(in_channels, out_channels, stride, slope):
    """3x3 depthwise conv-bn-act then 1x1 pointwise conv-bn-act (indices 0..5)."""
    return nn.Sequential(*conv_bn_act(in_channels, in_channels, 3, stride, groups=in_channels, slope=slope),
                         *conv_bn_act(in_channels, out_channels, 1, slope=slope))


@BACKBONES.register
class MobileNetV1(nn.Layer):
    """Returns [C3, C4, C5] (strides 8, 16, 32); channels 64/128/256 at width 0.25."""

    def __init__(self, width_mult=0.25, slope=0.1):
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"MobileNetV1: width_mult must be > 0, got {width_mult}")
        channels = int(_STEM_CHANNELS * width_mult)
        stem = [conv_bn_act(3, channels, 3, stride=2, slope=slope)]
        self.out_channels = []
        stages = []
        for index, blocks in enumerate(_STAGES):
            layers = stem if index == 0 else []
            for out, stride in blocks:
                out = int(out * width_mult)
                layers.append(depthwise_separable(channels, out, stride, slope))
                channels = out
            stages.append(nn.Sequential(*layers))
            self.out_channels.append(channels)
        self.stage1, self.stage2, self.stage3 = stages

    def forward(self, x):
        c3 = self.stage1(x)
        c4 = self.stage2(c3)
        return [c3, c4, self.stage3(c4)]
