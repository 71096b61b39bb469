"""The MasterNet search space and its mutation (DamoFD's DDSAR search).

A candidate is a list of BlockSpec (see modeling/backbones/masternet.py): a
SuperConv stem followed by residual blocks. A mutation replaces one or two
non-stem blocks by a random block of the space with the same input and
stride: a new block type, output width, bottleneck width and depth drawn
around the old ones (official lists of factors and +-2 sub-layers); widths are then re-chained and blocks deeper than
``SPLIT_DEPTH`` sub-layers are split in two, as the official search does.
Strides are kept, so every candidate keeps the stride-2..32 stages a detector
neck needs.
"""
import itertools

from ..modeling.backbones.masternet import BlockSpec, chain_channels
from ..modeling.backbones.masternet_blocks import BLOCK_KINDS, round_channels

# Block families searched (official SearchSpace/search_space_IDW_fixfc.py for
# DamoFD-0.5G, search_space_XXBL.py for 2.5G/10G/34G).
SPACES = {
    "idw": [f"SuperResIDWE{e}K{k}" for k in (3, 5, 7) for e in (1, 2, 4, 6)],
    "res": [f"SuperResK1K{k}K1" for k in (3, 5, 7)] + [f"SuperResK{k}K{k}" for k in (3, 5, 7)],
}
# Official seed structures of the 0.5G (idw) and 2.5G (res) searches.
SEEDS = {
    "idw": "SuperConvK3BNRELU(3,32,2,1)SuperResIDWE1K3(32,32,2,8,1)SuperResIDWE4K3(32,48,2,32,1)"
           "SuperResIDWE1K3(48,96,2,48,1)SuperResIDWE1K3(96,128,2,96,1)",
    "res": "SuperConvK3BNRELU(3,24,2,2)SuperResK3K3(24,32,2,32,3)SuperResK3K3(32,48,2,64,2)"
           "SuperResK3K3(48,64,2,128,2)SuperResK3K3(64,128,2,16,3)",
}
# Output-width factors and caps per space, as the official space files set
# them: the IDW space only widens blocks (its file caps widths at 128, which
# the published 0.5G structure exceeds, so the cap here is the larger one of
# the XXBL space); the XXBL space widens and narrows.
OUT_FACTORS = {"idw": (2.5, 2.0, 1.5, 1.25, 1.0),
               "res": (1.75, 2.0, 1.5, 1.25, 1.0, 1 / 1.25, 1 / 1.5, 1 / 2, 1 / 2.5)}
OUT_CAP = 1024
BOTTLENECK_FACTORS = (2.5, 2.0, 1.5, 1.25, 1.0, 1 / 1.25, 1 / 1.5, 1 / 2, 1 / 2.5)
BOTTLENECK_CAP = {"idw": None, "res": 256}
SPLIT_DEPTH = 6


def width_choices(width, factors, cap=None):
    return sorted({round_channels(min(cap or float("inf"), max(8, width * f))) for f in factors}, reverse=True)


def depth_choices(depth):
    return sorted({d for d in (depth - 2, depth - 1, depth, depth + 1, depth + 2) if d > 0}, reverse=True)


def block_choices(block, space):
    """Every block that may replace ``block`` (same input width and stride)."""
    if space not in SPACES:
        raise ValueError(f"search space '{space}' is not one of {', '.join(SPACES)}")
    cin, cout, stride, mid, depth = block.args
    widths = width_choices(cout, OUT_FACTORS[space], OUT_CAP)
    bottlenecks = width_choices(mid, BOTTLENECK_FACTORS, BOTTLENECK_CAP[space])
    return [BlockSpec(name, (cin, w, stride, b, d))
            for name, w, b, d in itertools.product(SPACES[space], widths, bottlenecks, depth_choices(depth))]


def num_layers(blocks):
    """Total sub-layers (the official max_layers constraint)."""
    return sum(b.args[-1] for b in blocks)


def split_deep_blocks(blocks, depth=SPLIT_DEPTH):
    """Split every residual block with >= ``depth`` sub-layers into two."""
    out = []
    for b in blocks:
        if BLOCK_KINDS[b.name].family != "conv" and b.args[-1] >= depth:
            cin, cout, stride, mid, n = b.args
            first = depth // 2
            out += [BlockSpec(b.name, (cin, cout, stride, mid, first)),
                    BlockSpec(b.name, (cout, cout, 1, mid, n - first))]
        else:
            out.append(b)
    return out


def mutate(blocks, rng, space, num_replaces=1):
    """A mutated copy of ``blocks`` (``rng`` is a random.Random)."""
    blocks = list(blocks)
    for block_id in sorted({rng.randint(1, len(blocks) - 1) for _ in range(num_replaces)}):
        blocks[block_id] = rng.choice(block_choices(blocks[block_id], space))
    return split_deep_blocks(chain_channels(blocks, blocks[0].args[0]))
