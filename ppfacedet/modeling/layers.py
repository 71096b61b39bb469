"""Small building blocks shared by the model families.

``ConvNorm`` mirrors the layout of mmcv's ConvModule (``conv`` then a norm
named ``bn`` or ``gn``, then an optional ReLU) so checkpoints of mmdet-based
projects map onto it by name.
"""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from ..core.errors import ConfigError


def upsample_nearest2x(x, like):
    """Nearest-neighbour 2x upsampling of ``x`` cropped to the spatial size of ``like``.

    A depthwise transposed conv with a constant 2x2 kernel of ones, stride 2:
    each output pixel is exactly one input pixel times 1.0 (no sums, so the
    result is bit-exact), then a crop to ``like``. Other forms lose somewhere:
    ``interpolate``'s nearest_interp fails under PIR + oneDNN; paddle2onnx turns
    ``repeat_interleave`` into a Tile onnxruntime rejects for dynamic shapes;
    an unsqueeze/expand/reshape copy is exact and converts, but its expand_v2
    kernel took 1.3 ms per call in SCRFD-500M's neck at 640x480 (legacy
    program, oneDNN: about 19% of the run; this transposed conv 0.14 ms).
    Repeating then cropping equals size-based nearest resizing whenever the
    target is 2n or 2n-1 pixels, which is every case a stride-2 pyramid
    produces. The kernel is a constant, not a parameter, so layer-based
    FLOPs counters skip it as they skip ``interpolate``.
    """
    channels = x.shape[1]
    ones = paddle.ones([channels, 1, 2, 2], dtype=x.dtype)
    up = F.conv2d_transpose(x, ones, stride=2, groups=channels)
    target = paddle.shape(like)
    return up[:, :, :target[2], :target[3]]


class BiasConv2D(nn.Conv2D):
    """``nn.Conv2D`` whose bias is added as ``[N, C, H*W] + [C, 1]`` in
    dynamic-graph runs with zero padding and NCHW data.

    Paddle's CPU kernel for the ``[1, C, 1, 1]`` broadcast that ``nn.Conv2D``
    adds its bias with is the slowest op of a YuNet training step: on a
    16x64x160x160 activation it took 395 ms forward and 1020 ms forward plus
    backward, against 111 ms and 233 ms for the same sums in three dimensions
    (2-core AVX2 machine). Each element is the same single float addition, so
    outputs are bit-identical; only the bias gradient's summation order
    differs. Static graphs (export, to_static) keep the standard conv + bias,
    the pattern inference passes fuse.
    """

    def forward(self, x):
        if (self.bias is None or not paddle.in_dynamic_mode() or self._padding_mode != "zeros"
                or self._data_format != "NCHW"):
            return super().forward(x)
        out = F.conv2d(x, self.weight, None, self._stride, self._padding, self._dilation,
                       self._groups, self._data_format)
        n, c, h, w = out.shape
        return (out.reshape([n, c, h * w]) + self.bias.reshape([c, 1])).reshape([n, c, h, w])


def make_norm(norm, channels, num_groups=None):
    """(attribute name, layer) for a norm type; names follow mmcv (bn / gn)."""
    if norm == "BN":
        return "bn", nn.BatchNorm2D(channels, momentum=0.9, epsilon=1e-5)
    if norm == "GN":
        if not num_groups or channels % num_groups:
            raise ConfigError(f"GroupNorm: num_groups={num_groups} must divide {channels} channels")
        return "gn", nn.GroupNorm(num_groups, channels, epsilon=1e-5)
    raise ConfigError(f"norm '{norm}' is not one of BN, GN (or null for none)")


class ConvNorm(nn.Layer):
    """Conv -> optional norm -> optional ReLU. The conv has a bias only without a norm."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, groups=1, norm=None,
                 num_groups=None, act=True):
        super().__init__()
        self.conv = nn.Conv2D(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2,
                              groups=groups, bias_attr=None if norm is None else False)
        self.norm_name = None
        if norm is not None:
            self.norm_name, layer = make_norm(norm, out_channels, num_groups)
            self.add_sublayer(self.norm_name, layer)
        self.act = nn.ReLU() if act else None

    def forward(self, x):
        x = self.conv(x)
        if self.norm_name is not None:
            x = getattr(self, self.norm_name)(x)
        return self.act(x) if self.act is not None else x


class DepthwiseSeparable(nn.Layer):
    """3x3 depthwise ConvNorm+ReLU then 1x1 pointwise ConvNorm+ReLU (mmcv's
    DepthwiseSeparableConvModule layout)."""

    def __init__(self, in_channels, out_channels, norm=None, num_groups=None):
        super().__init__()
        self.depthwise_conv = ConvNorm(in_channels, in_channels, 3, groups=in_channels, norm=norm,
                                       num_groups=num_groups)
        self.pointwise_conv = ConvNorm(in_channels, out_channels, 1, norm=norm, num_groups=num_groups)

    def forward(self, x):
        return self.pointwise_conv(self.depthwise_conv(x))


class Scale(nn.Layer):
    """A learnable scalar multiplier (one per pyramid level in SCRFD-style heads)."""

    def __init__(self, value=1.0):
        super().__init__()
        self.scale = self.create_parameter(
            shape=[], default_initializer=nn.initializer.Constant(value))

    def forward(self, x):
        return x * self.scale
