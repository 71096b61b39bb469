"""What a loss or a layer needs to know about the other training processes.

The official multi-GPU recipes (mmdet's ``reduce_mean`` in SCRFD's and YuNet's
heads; Pytorch_Retinaface's single-process DataParallel, which normalises over
the whole batch) divide each loss by a count averaged over the processes. Each
process then takes ``sum_over_its_images / mean_count``, and the gradient
average data parallelism takes equals one process's ``sum / total_count`` on
the full batch.
"""
import paddle
import paddle.distributed as dist
from paddle.autograd import PyLayer


def is_multi_process():
    return dist.get_world_size() > 1 and dist.is_initialized()


def mean_over_processes(value):
    """The mean of ``value`` (a number or a tensor, taken as a constant) over the
    training processes; ``value`` itself in a single process."""
    if not is_multi_process():
        return value
    is_tensor = isinstance(value, paddle.Tensor)
    total = (value.detach() if is_tensor else paddle.to_tensor(float(value), "float32")).clone()
    dist.all_reduce(total)
    mean = total / dist.get_world_size()
    return mean if is_tensor else float(mean)


class SumOverProcesses(PyLayer):
    """All-reduce (sum) that gradients flow through: the gradient of a sum over
    processes is, on every process, the sum of the incoming gradients."""

    @staticmethod
    def forward(ctx, x):
        total = x.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad):
        total = grad.clone()
        dist.all_reduce(total)
        return total
