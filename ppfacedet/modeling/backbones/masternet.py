"""DamoFD's MasterNet backbone, built from a structure string.

The DDSAR search writes a backbone as one line of blocks,
``SuperConvK3BNRELU(3,32,2,1)SuperResIDWE1K3(32,32,2,8,1)...``; a block's
arguments are (in, out, stride, sub_layers) for the SuperConv stem and
(in, out, stride, bottleneck, sub_layers) for the residual kinds. The block
kinds are listed in ``masternet_blocks.BLOCK_KINDS``.

Stage features are the outputs of the first block whose cumulative stride
reaches 4, 8, 16, 32 (the official ``extract_stage_features_and_logit``,
resolved here from the strings' strides rather than from tensor shapes, so
any input size gives the same selection). Parameter names follow the
official module tree (``module_list.<block>.module_list.<layer>.netblock...``),
so official checkpoints map one to one.
"""
import math
import re
from collections import namedtuple

import paddle
import paddle.nn as nn

from ...core.errors import ConfigError
from ...core.registry import BACKBONES, closest
from .masternet_blocks import BN, ARG_NAMES, BLOCK_KINDS, ResBlock, SuperBlock, plan_block, plan_cost

# The official MasterNet.init_weights: Xavier-normal convs with this gain.
XAVIER_GAIN = 3.26033

BlockSpec = namedtuple("BlockSpec", "name args")

_BLOCK_RE = re.compile(r"([A-Za-z0-9]+)\(([^()]*)\)")
STAGE_STRIDES = (4, 8, 16, 32)


def parse_structure(text):
    """Structure string -> list of BlockSpec. A malformed string raises
    ConfigError naming the character position and what was expected there."""
    if not isinstance(text, str):
        raise ConfigError(f"MasterNet structure must be a string, got {type(text).__name__}")
    text = text.strip()
    blocks, pos = [], 0
    while pos < len(text):
        m = _BLOCK_RE.match(text, pos)
        if m is None:
            raise ConfigError(
                f"MasterNet structure: cannot parse at position {pos} ('{text[pos:pos + 30]}'): "
                f"expected BlockName(int,int,...)")
        name, arg_text = m.group(1), m.group(2)
        if name not in BLOCK_KINDS:
            raise ConfigError(
                f"MasterNet structure: unknown block '{name}' at position {pos}{closest(name, BLOCK_KINDS)}; "
                f"valid: {', '.join(sorted(BLOCK_KINDS))}")
        names = ARG_NAMES[BLOCK_KINDS[name].family]
        try:
            args = tuple(int(a) for a in arg_text.split(","))
        except ValueError:
            raise ConfigError(
                f"MasterNet structure: block {name} at position {pos} has non-integer arguments "
                f"'{arg_text}'; expected ({', '.join(names)})") from None
        if len(args) != len(names) or min(args) <= 0:
            raise ConfigError(
                f"MasterNet structure: block {name} at position {pos} takes {len(names)} positive "
                f"integers ({', '.join(names)}), got '({arg_text})'")
        blocks.append(BlockSpec(name, args))
        pos = m.end()
    if not blocks:
        raise ConfigError("MasterNet structure is empty")
    return blocks


def format_structure(blocks):
    return "".join(f"{b.name}({','.join(str(a) for a in b.args)})" for b in blocks)


def chain_channels(blocks, in_channels=3):
    """Rewrite every block's input width to the previous block's output, as
    the official search does after replacing a block."""
    out = []
    for b in blocks:
        out.append(BlockSpec(b.name, (in_channels,) + tuple(b.args[1:])))
        in_channels = b.args[1]
    return out


def check_chain(blocks, in_channels=3):
    for i, b in enumerate(blocks):
        if b.args[0] != in_channels:
            raise ConfigError(
                f"MasterNet structure: block {i} {format_structure([b])} takes {b.args[0]} input "
                f"channels but receives {in_channels}")
        in_channels = b.args[1]


def stage_block_indices(blocks):
    """For each of strides 4/8/16/32: the index of the first block whose
    cumulative stride reaches it (stages never reached are left out)."""
    indices, stride, targets = [], 1, list(STAGE_STRIDES)
    for i, b in enumerate(blocks):
        stride *= b.args[2]
        if targets and stride == targets[0]:
            indices.append(i)
            targets.pop(0)
    return indices


def structure_cost(blocks, h, w):
    """Analytic (FLOPs, params) of the backbone at input h x w (see plan_cost)."""
    flops = params = 0
    for b in blocks:
        f, p, (h, w) = plan_cost(plan_block(b.name, b.args), h, w)
        flops, params = flops + f, params + p
    return flops, params


@BACKBONES.register
class MasterNet(nn.Layer):
    """Args:
        structure: the structure string (official ``plainnet_struct``).
        out_indices: which of the stride 4/8/16/32 stage features to return
            (0 = stride 4). The official backbone returns all four and its
            PAFPN skips the first with ``start_level=1``.
    """

    def __init__(self, structure, out_indices=(0, 1, 2, 3)):
        super().__init__()
        blocks = parse_structure(structure)
        check_chain(blocks)
        self.blocks = blocks
        self.structure = format_structure(blocks)
        stages = stage_block_indices(blocks)
        out_indices = list(out_indices)
        bad = [i for i in out_indices if not 0 <= i < len(stages)]
        if bad or not out_indices or out_indices != sorted(set(out_indices)):
            raise ConfigError(
                f"MasterNet out_indices {out_indices}: expected increasing indices of the stages "
                f"0..{len(stages) - 1} (strides {list(STAGE_STRIDES[:len(stages)])})")
        self.out_block_ids = [stages[i] for i in out_indices]
        self.out_channels = [blocks[i].args[1] for i in self.out_block_ids]
        self.module_list = nn.LayerList([SuperBlock(b.name, b.args) for b in blocks])
        self.init_weights()

    def init_weights(self):
        """As the official backbone initialises itself for training: Xavier
        normal convs (gain 3.26), zero biases, unit BNs, and the last BN of
        every residual branch zeroed so each unit starts as its shortcut."""
        for layer in self.sublayers():
            if isinstance(layer, nn.Conv2D):
                out_c, in_per_group, kh, kw = layer.weight.shape
                std = XAVIER_GAIN * math.sqrt(2.0 / ((in_per_group + out_c) * kh * kw))
                layer.weight.set_value(paddle.normal(0.0, std, layer.weight.shape))
                if layer.bias is not None:
                    layer.bias.set_value(paddle.zeros(layer.bias.shape))
            elif isinstance(layer, nn.BatchNorm2D):
                layer.weight.set_value(paddle.ones(layer.weight.shape))
                layer.bias.set_value(paddle.zeros(layer.bias.shape))
        for layer in self.sublayers():
            if isinstance(layer, ResBlock):
                last_bn = [m for m in layer.module_list if isinstance(m, BN)][-1]
                last_bn.netblock.weight.set_value(paddle.zeros(last_bn.netblock.weight.shape))

    def forward(self, x):
        feats = []
        last = self.out_block_ids[-1]
        for i, block in enumerate(self.module_list):
            x = block(x)
            if i in self.out_block_ids:
                feats.append(x)
            if i == last:
                break
        return feats
