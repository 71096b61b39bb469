"""SyncBN: BatchNorm whose training statistics cover the batch of every process.

Paddle's own ``paddle.nn.SyncBatchNorm`` has a GPU kernel only (3.3.1 on CPU:
"The kernel `sync_batch_norm` is not registered"), so a CPU (gloo) run uses
``CrossProcessBatchNorm``: the per-channel sums are all-reduced, in the forward
pass for the mean and variance and, through autograd, in the backward pass
for their gradients. Two processes with half a batch each then normalise, and
differentiate, exactly as one process does on the whole batch. Its running
variance moves toward the unbiased variance of the whole synchronised batch, as
torch's SyncBatchNorm's does (engine/batchnorm_stats.py says why).
"""
import paddle
from paddle.nn.layer.norm import _BatchNormBase

from ..core.distributed import SumOverProcesses, is_multi_process
from .batchnorm_stats import check_values_per_channel


class CrossProcessBatchNorm(paddle.nn.BatchNorm2D):
    """BatchNorm2D (same parameters and buffers, so the same state dict) with
    statistics over all processes' batches while training."""

    follows_torch_variance = True

    def forward(self, x):
        if not self.training or self._use_global_stats:
            return super().forward(x)
        multi_process = is_multi_process()
        sum_over = SumOverProcesses.apply if multi_process else (lambda t: t)
        axes = [0, 2, 3]
        local_count = x.shape[0] * x.shape[2] * x.shape[3]
        if not multi_process:  # over several processes there are always 2 values or more
            check_values_per_channel(local_count, x)
        count = sum_over(paddle.full([1], local_count, x.dtype))
        mean = sum_over(x.sum(axis=axes)) / count
        centred = x - mean.reshape([1, -1, 1, 1])
        variance = sum_over((centred * centred).sum(axis=axes)) / count  # biased: what both frameworks normalise with
        with paddle.no_grad():
            momentum = self._momentum
            self._mean.set_value(self._mean * momentum + mean.detach() * (1 - momentum))
            unbiased = variance.detach() * (count / (count - 1))
            self._variance.set_value(self._variance * momentum + unbiased * (1 - momentum))
        scale = self.weight / paddle.sqrt(variance + self._epsilon)
        return centred * scale.reshape([1, -1, 1, 1]) + self.bias.reshape([1, -1, 1, 1])


def _synced(norm):
    if paddle.is_compiled_with_cuda() and "gpu" in str(paddle.get_device()):
        return paddle.nn.SyncBatchNorm.convert_sync_batchnorm(norm)
    if norm._data_format != "NCHW" or norm._weight_attr is False or norm._bias_attr is False:
        raise NotImplementedError(f"sync_bn on CPU supports NCHW BatchNorm2D with affine parameters, "
                                  f"not {type(norm).__name__}({norm._data_format})")
    synced = CrossProcessBatchNorm(norm._num_features, norm._momentum, norm._epsilon)
    synced.weight, synced.bias = norm.weight, norm.bias
    synced._mean, synced._variance = norm._mean, norm._variance
    synced.training = norm.training
    return synced


def convert_sync_batchnorm(model):
    """Replace every BatchNorm of ``model`` in place by its synchronised form
    (Paddle's SyncBatchNorm on GPU, CrossProcessBatchNorm on CPU), sharing its
    parameters and statistics; returns the number replaced."""
    replaced = 0
    for parent in [model, *model.sublayers()]:
        for name, child in list(parent.named_children()):
            if isinstance(child, _BatchNormBase) and not isinstance(
                    child, (CrossProcessBatchNorm, paddle.nn.SyncBatchNorm)):
                setattr(parent, name, _synced(child))
                replaced += 1
    return replaced
