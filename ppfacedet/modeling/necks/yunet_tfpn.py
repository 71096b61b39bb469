"""YuNet's tiny FPN (libfacedetection.train ``TFPN``).

Top-down only: from the coarsest level down, each level goes through its own
ConvDPUnit ("lateral conv") and is then upsampled 2x and added to the next
finer raw level; the finest level gets its lateral conv last. There is no
separate output conv.
"""
import paddle.nn as nn

from ...core.errors import ConfigError
from ...core.registry import NECKS
from ..backbones.yunet_backbone import ConvDPUnit
from ..layers import upsample_nearest2x


@NECKS.register
class YuNetTFPN(nn.Layer):
    def __init__(self, in_channels, out_idx=(0, 1, 2)):
        super().__init__()
        if len(set(in_channels)) != 1:
            raise ConfigError(f"model.neck: YuNetTFPN adds levels together, so every input level "
                              f"needs the same channel count; got in_channels={in_channels}")
        bad = [i for i in out_idx if not 0 <= i < len(in_channels)]
        if bad:
            raise ConfigError(f"model.neck.out_idx: {bad} outside 0..{len(in_channels) - 1}")
        self.out_idx = list(out_idx)
        self.lateral_convs = nn.LayerList([ConvDPUnit(c, c) for c in in_channels])
        self.out_channels = [in_channels[i] for i in self.out_idx]

    def forward(self, feats):
        feats = list(feats)
        for i in range(len(feats) - 1, 0, -1):
            feats[i] = self.lateral_convs[i](feats[i])
            feats[i - 1] = feats[i - 1] + upsample_nearest2x(feats[i], feats[i - 1])
        feats[0] = self.lateral_convs[0](feats[0])
        return [feats[i] for i in self.out_idx]
