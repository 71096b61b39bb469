"""Child processes that do not outlive their parent (Linux).

``die_with_parent`` runs in the child (a ``preexec_fn`` or a pool
initializer): the kernel sends it SIGKILL when the parent dies, even by
SIGKILL, so a killed service leaves no decode workers behind and a killed
test leaves no server.
"""
import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid=None):
    """Ask for SIGKILL when the parent dies; if it already has (we were
    reparented before the request took effect), exit now."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)
