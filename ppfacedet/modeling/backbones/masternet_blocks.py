"""The building blocks of DamoFD's MasterNet (a Zen-NAS "PlainNet").

A super block such as ``SuperResIDWE1K3(32,64,2,8,1)`` expands into a flat
list of basic blocks (conv, depthwise conv, BN, ReLU, residual units). The
expansion is first written as a *plan* of plain tuples, so the same plan
drives three things that must agree: the Paddle layers, the analytic FLOPs
and parameter count used by the search, and the official parameter names
(every basic block, parameter-free ReLU included, takes one index in its
parent's ``module_list``; convs and BNs live under ``netblock``; residual
shortcuts under ``proj``).

Plan items:
  ("conv", cin, cout, k, stride)       dense KxK conv, no bias
  ("dw", c, k, stride)                 depthwise KxK conv, no bias
  ("bn", c)
  ("relu", c)
  ("res", cin, cout, stride, always_project, [items])
      residual unit: items(x) + shortcut(x); the shortcut is a 1x1 conv
      (with bias) + BN when always_project or the shape changes, else x.
"""
from collections import namedtuple

import paddle.nn as nn
import paddle.nn.functional as F

from ..layers import BiasConv2D

# BN epsilon the official MasterNet sets on every BatchNorm it owns.
BN_EPSILON = 1e-3

# family: "conv" (SuperConvK*BNRELU, args in,out,stride,sub_layers),
#         "kxkx" (SuperResK*K*), "k1kxk1" (SuperResK1K*K1),
#         "idw" (SuperResIDWE*K*); the last three take in,out,stride,bottleneck,sub_layers.
BlockKind = namedtuple("BlockKind", "family kernel expansion")
ARG_NAMES = {
    "conv": ("in_channels", "out_channels", "stride", "sub_layers"),
    "kxkx": ("in_channels", "out_channels", "stride", "bottleneck", "sub_layers"),
    "k1kxk1": ("in_channels", "out_channels", "stride", "bottleneck", "sub_layers"),
    "idw": ("in_channels", "out_channels", "stride", "bottleneck", "sub_layers"),
}


def _block_kinds():
    kinds = {}
    for k in (1, 3, 5, 7):
        kinds[f"SuperConvK{k}BNRELU"] = BlockKind("conv", k, None)
    for k in (3, 5, 7):
        kinds[f"SuperResK{k}K{k}"] = BlockKind("kxkx", k, None)
        kinds[f"SuperResK1K{k}K1"] = BlockKind("k1kxk1", k, None)
        for e in (1, 2, 4, 6):
            kinds[f"SuperResIDWE{e}K{k}"] = BlockKind("idw", k, e)
    return kinds


BLOCK_KINDS = _block_kinds()


def round_channels(x, base=8):
    """Nearest multiple of ``base``, at least ``base`` (the official smart_round)."""
    return max(base, int(round(x / float(base))) * base)


def _conv_bn(cin, cout, k, stride, relu=True):
    items = [("conv", cin, cout, k, stride), ("bn", cout)]
    return items + [("relu", cout)] if relu else items


def _dw_bn_relu(c, k, stride):
    return [("dw", c, k, stride), ("bn", c), ("relu", c)]


def plan_block(name, args):
    """Expand one super block into plan items (see the module docstring)."""
    kind = BLOCK_KINDS[name]
    if kind.family == "conv":
        cin, cout, stride, sub_layers = args
        items = []
        for i in range(sub_layers):
            items += _conv_bn(cin if i == 0 else cout, cout, kind.kernel, stride if i == 0 else 1)
        return items

    cin, cout, stride, mid, sub_layers = args
    k = kind.kernel
    items = []
    last = cin
    for i in range(sub_layers):
        s = stride if i == 0 else 1
        if kind.family == "kxkx":
            units = [(last, cout, s, _conv_bn(last, mid, k, s) + _conv_bn(mid, cout, k, 1, relu=False))]
        elif kind.family == "k1kxk1":
            units = [
                (last, cout, s, _conv_bn(last, mid, 1, 1) + _conv_bn(mid, mid, k, s)
                 + _conv_bn(mid, cout, 1, 1, relu=False)),
                (cout, cout, 1, _conv_bn(cout, mid, 1, 1) + _conv_bn(mid, mid, k, 1)
                 + _conv_bn(mid, cout, 1, 1, relu=False)),
            ]
        else:  # inverted depthwise: the first unit ends at the bottleneck width, the second at out
            dw_mid = round_channels(mid * kind.expansion)
            dw_out = round_channels(cout * kind.expansion)
            units = [
                (last, mid, s, _conv_bn(last, dw_mid, 1, 1) + _dw_bn_relu(dw_mid, k, s)
                 + _conv_bn(dw_mid, mid, 1, 1, relu=False)),
                (mid, cout, 1, _conv_bn(mid, dw_out, 1, 1) + _dw_bn_relu(dw_out, k, 1)
                 + _conv_bn(dw_out, cout, 1, 1, relu=False)),
            ]
        for j, (u_in, u_out, u_stride, inner) in enumerate(units):
            # The first unit of a block always has a projection shortcut (official ResBlockProj).
            items.append(("res", u_in, u_out, u_stride, i == 0 and j == 0, inner))
            items.append(("relu", u_out))
        last = cout
    return items


def conv_out_size(size, k, stride):
    pad = (k - 1) // 2
    return (size + 2 * pad - k) // stride + 1


def plan_cost(items, h, w):
    """(FLOPs, params, (h, w) after) of plan items at input size h x w, counted
    the way mmcv's complexity counter sees the official modules: conv
    multiply-accumulates (+ bias adds), BN 2 ops per element, functional ReLU
    and residual adds free; params exclude BN running statistics."""
    flops = params = 0
    for item in items:
        op = item[0]
        if op == "conv":
            _, cin, cout, k, s = item
            h, w = conv_out_size(h, k, s), conv_out_size(w, k, s)
            flops += h * w * cout * cin * k * k
            params += cout * cin * k * k
        elif op == "dw":
            _, c, k, s = item
            h, w = conv_out_size(h, k, s), conv_out_size(w, k, s)
            flops += h * w * c * k * k
            params += c * k * k
        elif op == "bn":
            flops += 2 * h * w * item[1]
            params += 2 * item[1]
        elif op == "res":
            _, cin, cout, s, always, inner = item
            f, p, (oh, ow) = plan_cost(inner, h, w)
            flops, params = flops + f, params + p
            if always or s > 1 or cin != cout:
                flops += oh * ow * (cout * cin + cout + 2 * cout)  # 1x1 conv + bias + BN
                params += cout * cin + cout + 2 * cout
            h, w = oh, ow
    return flops, params, (h, w)


class ConvKX(nn.Layer):
    def __init__(self, cin, cout, k, stride, groups=1):
        super().__init__()
        self.netblock = nn.Conv2D(cin, cout, k, stride=stride, padding=(k - 1) // 2,
                                  groups=groups, bias_attr=False)

    def forward(self, x):
        return self.netblock(x)


class BN(nn.Layer):
    def __init__(self, c):
        super().__init__()
        self.netblock = nn.BatchNorm2D(c, epsilon=BN_EPSILON)

    def forward(self, x):
        return self.netblock(x)


class RELU(nn.Layer):
    """Parameter-free, but holds its index in module_list like the official
    block. Functional on purpose: the official block calls F.relu, which
    complexity counters do not see."""

    def forward(self, x):
        return F.relu(x)


class ResBlock(nn.Layer):
    def __init__(self, cin, cout, stride, always_project, items):
        super().__init__()
        self.module_list = nn.LayerList([build_item(it) for it in items])
        self.proj = None
        if always_project or stride > 1 or cin != cout:
            self.proj = nn.Sequential(BiasConv2D(cin, cout, 1, stride=stride),
                                      nn.BatchNorm2D(cout, epsilon=BN_EPSILON))

    def forward(self, x):
        out = x
        for layer in self.module_list:
            out = layer(out)
        return out + (self.proj(x) if self.proj is not None else x)


def build_item(item):
    op = item[0]
    if op == "conv":
        _, cin, cout, k, s = item
        return ConvKX(cin, cout, k, s)
    if op == "dw":
        _, c, k, s = item
        return ConvKX(c, c, k, s, groups=c)
    if op == "bn":
        return BN(item[1])
    if op == "relu":
        return RELU()
    if op == "res":
        return ResBlock(*item[1:])
    raise ValueError(f"unknown plan item {item!r}")


class SuperBlock(nn.Layer):
    """One block of the structure string, e.g. SuperResK1K3K1(56,80,2,40,5)."""

    def __init__(self, name, args):
        super().__init__()
        self.name, self.args = name, tuple(args)
        self.out_channels = args[1]
        self.stride = args[2]
        self.module_list = nn.LayerList([build_item(it) for it in plan_block(name, args)])

    def forward(self, x):
        for layer in self.module_list:
            x = layer(x)
        return x
