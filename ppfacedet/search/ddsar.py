"""The DDSAR score of DamoFD (ICLR 2023): distribution-dependent, stage-aware
ranking of backbones without training.

As the official search computes it (``Masternet.forward_ddsar_score``, which
is what ``--zero_shot_score DDSAR`` calls), the score is analytic: it needs
the structure and the input size, not a forward pass, so no weights (random or
otherwise) enter it. For each of the five blocks (stages):

    SAR = log(log(3 h^2) + sum_layers 3 h^2 log(c / 3)) + 0.005 * sum of kernel sizes

where h is the feature size at that layer and c runs over the channel widths
the block's convs see (the expressivity of a Gaussian random net grows with
the log-widths, per the maximum-entropy view DamoFD builds on); the second
term rewards receptive field. DDSAR is the weighted sum of the five stage
scores, with weights set by how WIDER faces are distributed across the
stride-2..32 stages.
"""
import math
import re

from ..modeling.backbones.masternet_blocks import BLOCK_KINDS

STAGE_WEIGHTS = (0.2, 0.27, 0.25, 0.18, 0.1)
KERNEL_WEIGHT = 0.005
IMAGE_CHANNELS = 3


def _h2(h, c):
    return IMAGE_CHANNELS * h * h * math.log(c / IMAGE_CHANNELS)


def stage_scores(blocks, input_size):
    """SAR score of every block at a square input of ``input_size``."""
    h = float(input_size)
    scores = []
    for b in blocks:
        kind = BLOCK_KINDS[b.name]
        cin, cout, stride = b.args[:3]
        sub_layers = b.args[-1]
        base = math.log(h * h * IMAGE_CHANNELS)
        volume, kernels = 0.0, 0
        for _ in range(sub_layers):
            if kind.family == "conv":
                volume += _h2(h, cin)
                h, stride = (h / 2, 1) if stride == 2 else (h, stride)
                kernels += kind.kernel
            elif kind.family == "idw":
                mid = b.args[3]
                # The official score takes the expansion times the bottleneck, unrounded.
                dw = int(re.search(r"IDWE(\d)", b.name).group(1)) * mid
                volume += _h2(h, cin) + _h2(h, dw)
                h, stride = (h / 2, 1) if stride == 2 else (h, stride)
                volume += _h2(h, dw) + _h2(h, mid) + 2 * _h2(h, dw)
                kernels += 2 * kind.kernel + 4
            elif kind.family == "k1kxk1":
                mid = b.args[3]
                volume += _h2(h, cin) + _h2(h, mid)
                h, stride = (h / 2, 1) if stride == 2 else (h, stride)
                volume += _h2(h, mid) + _h2(h, cout) + 2 * _h2(h, mid)
                kernels += 2 * kind.kernel + 4
            else:  # kxkx
                mid = b.args[3]
                volume += _h2(h, cin)
                h, stride = (h / 2, 1) if stride == 2 else (h, stride)
                volume += _h2(h, mid)
                kernels += 2 * kind.kernel
            cin = cout
        scores.append(math.log(base + volume) + KERNEL_WEIGHT * kernels)
    return scores


def ddsar_score(blocks, input_size):
    """Weighted sum of the five stage scores; a structure that is not five
    blocks has no DDSAR score (ValueError), as in the official search."""
    if len(blocks) != len(STAGE_WEIGHTS):
        raise ValueError(f"DDSAR scores five-block structures (stem + 4 stages), got {len(blocks)} blocks")
    return sum(w * s for w, s in zip(STAGE_WEIGHTS, stage_scores(blocks, input_size)))
