"""BatchNorm running statistics as the official (PyTorch) trainings keep them.

Paddle's batch_norm moves the running variance toward the *biased* batch
variance (sum of squares / n); torch's BatchNorm2d, which every official recipe
we port trains with, toward the *unbiased* one (/ (n - 1)). On a 2x2 map of one
image the two updates differ by a third. ``follow_torch_running_variance`` makes
a model's BatchNorms update as torch's do; the trainer applies it to every model
it trains. The running mean, the normalisation itself (biased in both
frameworks) and inference are unchanged, and so is the state dict.

How: Paddle's own op runs unchanged, on a copy of the running variance, and
the running variance then gets the part the op left out. The op has set the copy
to ``v1 = m*v0 + (1-m)*b`` (``b`` the biased batch variance, ``m`` Paddle's
momentum), so torch's ``m*v0 + (1-m)*b*n/(n-1)`` is ``lerp(m*v0, v1, n/(n-1))``:
three per-channel operations, whatever kernel ran (CPU, cuDNN, GPU
SyncBatchNorm), instead of a second pass over the activations. Its float32
error is about one rounding of ``v1``. The op gets a copy because its backward
keeps the variance tensor it was given, and Paddle refuses a backward through a
tensor changed in place since.
"""
import functools
import math

import paddle
import paddle.distributed as dist
import paddle.nn.functional as F
from paddle import _C_ops
from paddle.nn.layer.norm import _BatchNormBase


def check_values_per_channel(count, x):
    """torch refuses to train a BatchNorm on one value per channel: its unbiased
    variance would divide by zero (and the normalised output is all zeros)."""
    if count < 2:
        raise ValueError(f"BatchNorm in training needs more than 1 value per channel, got an input of shape "
                         f"{list(x.shape)}: use larger training images or more images per batch")


class TorchRunningVariance:
    """Put before a Paddle BatchNorm class (BatchNorm1D/2D/3D): the running
    variance moves toward the unbiased batch variance, as torch's does."""

    follows_torch_variance = True

    def _updates_running_statistics(self):
        # Paddle's rule (functional batch_norm): use_global_stats None follows
        # the training flag, False always updates, True never
        return self.training if self._use_global_stats is None else not self._use_global_stats

    def _values_per_channel(self, x):
        return math.prod(x.shape) // self._num_features

    def _normalise(self, x, running_variance):
        """The layer's own forward, with ``running_variance`` for its buffer."""
        self._check_data_format(self._data_format)
        self._check_input_dim(x)
        return F.batch_norm(x, self._mean, running_variance, weight=self.weight, bias=self.bias,
                            training=self.training, momentum=self._momentum, epsilon=self._epsilon,
                            data_format=self._data_format, use_global_stats=self._use_global_stats)

    def forward(self, x):
        if not self._updates_running_statistics():
            return self._paddle_forward(x)
        count = self._values_per_channel(x)
        check_values_per_channel(count, x)
        updated = self._variance.clone()
        out = self._normalise(x, updated)
        with paddle.no_grad():
            self._variance.scale_(self._momentum).lerp_(updated, count / (count - 1))
        return out


class TorchRunningVarianceSync(TorchRunningVariance):
    """The same for Paddle's (GPU) SyncBatchNorm."""

    def _updates_running_statistics(self):
        return self.training  # SyncBatchNorm.forward ignores use_global_stats

    def _values_per_channel(self, x):
        # Paddle's kernel averages the processes' per-channel moments, so it
        # counts every process as holding as many values as this one
        return TorchRunningVariance._values_per_channel(self, x) * dist.get_world_size()

    def _normalise(self, x, running_variance):
        # SyncBatchNorm.forward (Paddle 3.3.1) in dygraph, with running_variance for its buffer
        self._check_data_format()
        return _C_ops.sync_batch_norm_(x, self._mean, running_variance, self.weight, self.bias, not self.training,
                                       self._momentum, self._epsilon, self._data_format, False, False)[0]


@functools.lru_cache(maxsize=None)
def _torch_variance_class(cls):
    # The same name, so a printed model reads as before. The Paddle forward is
    # named, not reached through super(): exporting converts the code, and
    # dy2static turns super() into super(type(self), self), which would call
    # this forward again without end.
    mixin = TorchRunningVarianceSync if issubclass(cls, paddle.nn.SyncBatchNorm) else TorchRunningVariance
    return type(cls.__name__, (mixin, cls), {"__module__": __name__, "_paddle_forward": cls.forward})


def follow_torch_running_variance(model):
    """Make every BatchNorm of ``model`` update its running variance as torch's
    does. Each layer keeps its identity, parameters, buffers and hooks; only its
    class gains ``TorchRunningVariance``. Returns the number of layers changed
    (layers that already follow torch, like sync_bn's CPU one, are left)."""
    changed = 0
    for layer in [model, *model.sublayers()]:
        if isinstance(layer, paddle.nn.BatchNorm):
            raise NotImplementedError(f"{type(layer).__name__} (Paddle's legacy BatchNorm) cannot follow torch's "
                                      "running variance; build the model with BatchNorm1D/2D/3D")
        if isinstance(layer, _BatchNormBase) and not getattr(layer, "follows_torch_variance", False):
            layer.__class__ = _torch_variance_class(type(layer))
            changed += 1
    return changed
