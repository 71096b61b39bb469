"""How the training loader's worker processes start, and how they end.

Start: from a fork server, never by forking the trainer. By the time the
loader starts its workers the trainer has run OpenMP, oneDNN and OpenCV
thread pools (the evaluation before the first step, then every epoch's
steps). A forked child inherits those runtimes' locks and bookkeeping but not
their threads, so its first call into one can wait forever: a worker calling
``core.set_num_threads(1)`` after ``--eval`` deadlocked on an AVX-512 machine.
The fork server is a fresh interpreter that imports the libraries and runs
nothing else; each epoch's workers are forked from it, cheaply, with runtimes
that no thread has touched. (Python 3.14 makes this the default on Linux.)

End: a worker is not the trainer's child (it is the fork server's), and
paddle's own watchdog only looks at the parent, so each worker waits on a
pidfd of the trainer in a thread and kills itself the moment the trainer is
gone, ``kill -9`` included. The fork server then sees its last client close
and exits too.

Stacks: a worker names itself ``WORKER_NAME`` (what ``ps``/``top`` show) and
prints its Python stacks on SIGUSR1, which the training watchdog sends.
"""
import ctypes
import faulthandler
import functools
import multiprocessing
import multiprocessing.forkserver
import os
import select
import signal
import sys
import threading

WORKER_NAME = "ppfd-loader"  # Linux keeps 15 characters of a process name
STACKS_SIGNAL = signal.SIGUSR1
# imported once by the fork server, so a worker starts without importing anything heavy
_FORK_SERVER_PRELOAD = ["numpy", "cv2", "paddle", "ppfacedet.data.loader"]
_PR_SET_NAME = 15


def use_fork_server():
    """Make new worker processes start from the fork server, and start it now
    so that its imports overlap the trainer's own start (the evaluation before
    the first step). Leaves a start method the program chose itself other than
    ``fork`` (e.g. spawn) alone."""
    if multiprocessing.get_start_method(allow_none=True) in (None, "fork"):
        multiprocessing.set_forkserver_preload(_FORK_SERVER_PRELOAD)
        multiprocessing.set_start_method("forkserver", force=True)
    if multiprocessing.get_start_method() == "forkserver":
        multiprocessing.forkserver.ensure_running()


def worker_init_fn():
    """The loader's ``worker_init_fn``, bound to this (the trainer's) process."""
    return functools.partial(init_worker, os.getpid())


def init_worker(trainer_pid, worker_id):
    """In each worker: die with the trainer, answer SIGUSR1 with stacks, and
    use one OpenCV and one Paddle thread (workers run side by side on the
    cores the trainer computes on)."""
    _die_with(trainer_pid)
    _set_process_name(f"{WORKER_NAME}-{worker_id}")
    faulthandler.register(STACKS_SIGNAL, file=sys.stderr, all_threads=True)
    import cv2
    from paddle.base import core
    cv2.setNumThreads(1)
    core.set_num_threads(1)


def _die_with(pid):
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:  # gone before this worker started
        os.kill(os.getpid(), signal.SIGKILL)

    def wait_then_die():
        select.select([fd], [], [])  # readable once the process has exited
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=wait_then_die, name="die-with-trainer", daemon=True).start()


def _set_process_name(name):
    try:
        ctypes.CDLL(None).prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the name is only cosmetic
        pass


def descendants(pid):
    """Pids of every process below ``pid`` (children, their children, ...)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    # the name field may hold spaces and parentheses: the ppid follows its last ')'
                    parents.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(int(entry))
            except (OSError, IndexError, ValueError):  # exited meanwhile
                continue
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found.extend(children)
        todo.extend(children)
    return found


def process_name(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def worker_pids(trainer_pid):
    """The trainer's loader workers (through the fork server), by name."""
    return [p for p in descendants(trainer_pid) if process_name(p).startswith(WORKER_NAME)]
