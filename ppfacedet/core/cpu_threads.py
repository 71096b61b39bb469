"""How many CPU threads Paddle's math runs on while training.

Paddle sets ``OMP_NUM_THREADS=1`` when it is imported (unless the user set it),
so a CPU run computes on one core however many it is given. The Trainer sets
the math threads from the machine instead: the cores this process may use,
shared evenly by the training processes on this node. Loader workers are
separate processes that mostly run OpenCV; each gets one OpenCV and one Paddle
thread (data/loader_workers.py), so they do not multiply their threads over
the cores the training step computes on.

Overrides, strongest first: the config's ``cpu_threads``, the environment
variable ``PPFACEDET_CPU_THREADS``; 0 or unset means "from the machine".
"""
import os

from .errors import PPFaceDetError

ENV_VAR = "PPFACEDET_CPU_THREADS"


def usable_cores():
    """Cores this process may run on (its affinity mask, which containers and
    ``taskset`` narrow), not the machine's total."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def processes_on_node(world_size):
    """Training processes sharing this machine (paddle.distributed.launch says so)."""
    return int(os.environ.get("PADDLE_LOCAL_SIZE", world_size) or 1)


def threads_for(requested, world_size):
    """The thread count: ``requested`` (config), else the environment, else the
    usable cores divided among this node's training processes."""
    for value, where in ((requested, "cpu_threads"), (os.environ.get(ENV_VAR), ENV_VAR)):
        if value in (None, "", 0, "0"):
            continue
        try:
            threads = int(value)
        except (TypeError, ValueError):
            raise PPFaceDetError(f"{where}: '{value}' is not a whole number of threads") from None
        if threads < 0:
            raise PPFaceDetError(f"{where}: {threads} threads; give a positive number, or 0 for all cores")
        return threads
    return max(1, usable_cores() // max(1, processes_on_node(world_size)))


def set_math_threads(threads):
    from paddle.base import core
    core.set_num_threads(int(threads))
