"""Path-aggregation FPN (PANet) as SCRFD uses it.

From backbone levels ``start_level..``: 1x1 laterals, a top-down pass
(nearest 2x upsample + add), a 3x3 conv per level, then a bottom-up pass
(3x3/2 conv of the finer output added to the coarser one) and a final 3x3
conv on every level but the finest. All convs have biases and no norm or
activation. Names follow mmdet (``lateral_convs.0.conv``, ``fpn_convs``,
``downsample_convs``, ``pafpn_convs``).
"""
import paddle.nn as nn

from ...core.errors import ConfigError
from ...core.registry import NECKS
from ..layers import ConvNorm, upsample_nearest2x


@NECKS.register
class PAFPN(nn.Layer):
    def __init__(self, in_channels, out_channels=16, start_level=1):
        super().__init__()
        used = list(in_channels)[start_level:]
        if start_level < 0 or len(used) < 2:
            raise ConfigError(f"PAFPN: start_level={start_level} leaves {len(used)} of the backbone "
                              f"levels {list(in_channels)}; at least 2 are needed")
        self.start_level = start_level
        self.lateral_convs = nn.LayerList([ConvNorm(c, out_channels, 1, act=False) for c in used])
        self.fpn_convs = nn.LayerList([ConvNorm(out_channels, out_channels, 3, act=False) for _ in used])
        self.downsample_convs = nn.LayerList(
            [ConvNorm(out_channels, out_channels, 3, stride=2, act=False) for _ in used[1:]])
        self.pafpn_convs = nn.LayerList([ConvNorm(out_channels, out_channels, 3, act=False) for _ in used[1:]])
        self.out_channels = out_channels

    def forward(self, feats):
        feats = feats[self.start_level:]
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, feats)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + upsample_nearest2x(laterals[i], laterals[i - 1])
        inner = [conv(x) for conv, x in zip(self.fpn_convs, laterals)]
        for i, conv in enumerate(self.downsample_convs):
            inner[i + 1] = inner[i + 1] + conv(inner[i])
        return [inner[0]] + [conv(x) for conv, x in zip(self.pafpn_convs, inner[1:])]
