"""RetinaFace neck: a top-down FPN over C3-C5 followed by one SSH context
module per level. Sub-layer names follow the official ``fpn``/``ssh1..3``
modules so checkpoints import by prefix rename."""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from ...core.registry import NECKS
from ..backbones.retina_mobilenet import conv_bn_act


def resize_nearest_to(x, like):
    """Nearest-neighbour resize of ``x`` to the spatial size of ``like``.

    Matches ``interpolate(size=..., mode='nearest')`` (ONNX Resize asymmetric /
    floor): output row i reads input row floor(i * in / out), computed here in
    integers so it is exact for any pair of sizes, not only a 2x repeat. It is
    built from gathers with indices taken from the runtime shapes, so it
    exports with dynamic H, W and avoids the nearest_interp kernel.
    """
    src, dst = paddle.shape(x), paddle.shape(like)
    for axis in (2, 3):
        index = paddle.arange(dst[axis], dtype="int64") * src[axis].astype("int64")
        index = paddle.floor_divide(index, dst[axis].astype("int64"))
        x = paddle.index_select(x, index, axis=axis)
    return x


class SSH(nn.Layer):
    """Three receptive fields (3x3, two 3x3, three 3x3 with shared first conv)
    concatenated to half, quarter, quarter of ``channels``, then ReLU."""

    def __init__(self, in_channels, channels, slope):
        super().__init__()
        if channels % 4:
            raise ValueError(f"SSH: out_channels must be a multiple of 4, got {channels}")
        quarter = channels // 4
        self.conv3X3 = conv_bn_act(in_channels, channels // 2, 3)
        self.conv5X5_1 = conv_bn_act(in_channels, quarter, 3, slope=slope)
        self.conv5X5_2 = conv_bn_act(quarter, quarter, 3)
        self.conv7X7_2 = conv_bn_act(quarter, quarter, 3, slope=slope)
        self.conv7x7_3 = conv_bn_act(quarter, quarter, 3)

    def forward(self, x):
        branch3 = self.conv3X3(x)
        shared = self.conv5X5_1(x)
        branch5 = self.conv5X5_2(shared)
        branch7 = self.conv7x7_3(self.conv7X7_2(shared))
        # ReLU per branch equals ReLU of the concatenation; applied before the
        # concat it fuses into each conv, while concat+relu crashes Paddle
        # Inference's oneDNN fusion passes (Paddle 3.3, PIR).
        return paddle.concat([F.relu(branch3), F.relu(branch5), F.relu(branch7)], axis=1)


@NECKS.register
class RetinaFPNSSH(nn.Layer):
    """[C3, C4, C5] -> three maps of ``out_channels`` (strides 8, 16, 32)."""

    def __init__(self, in_channels, out_channels=64):
        super().__init__()
        if len(in_channels) != 3:
            raise ValueError(f"RetinaFPNSSH: expects 3 input levels, got in_channels={in_channels}")
        # The official nets use leaky ReLU only in the narrow (<= 64 channel) variant.
        slope = 0.1 if out_channels <= 64 else 0.0
        self.output1 = conv_bn_act(in_channels[0], out_channels, 1, slope=slope)
        self.output2 = conv_bn_act(in_channels[1], out_channels, 1, slope=slope)
        self.output3 = conv_bn_act(in_channels[2], out_channels, 1, slope=slope)
        self.merge1 = conv_bn_act(out_channels, out_channels, 3, slope=slope)
        self.merge2 = conv_bn_act(out_channels, out_channels, 3, slope=slope)
        self.ssh1 = SSH(out_channels, out_channels, slope)
        self.ssh2 = SSH(out_channels, out_channels, slope)
        self.ssh3 = SSH(out_channels, out_channels, slope)
        self.out_channels = out_channels

    def forward(self, feats):
        # Layers run in the official order (laterals 1-3, merge2, merge1,
        # ssh1-3): the BN-folded ONNX exports list their convs in this order.
        lateral3, lateral4, lateral5 = self.output1(feats[0]), self.output2(feats[1]), self.output3(feats[2])
        p4 = self.merge2(lateral4 + resize_nearest_to(lateral5, lateral4))
        p3 = self.merge1(lateral3 + resize_nearest_to(p4, lateral3))
        return [self.ssh1(p3), self.ssh2(p4), self.ssh3(lateral5)]
