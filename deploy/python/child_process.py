"""Child processes that do not outlive their parent.

``die_with_parent`` runs in the child (a ``preexec_fn``, a pool initializer,
a child script's start): on Linux the kernel sends it SIGKILL when the parent
dies, even by SIGKILL, so a killed service leaves no decode workers behind, a
killed predictor no TensorRT conversion, a killed test no server. Elsewhere a
daemon thread watches the parent's pid.
"""
import ctypes
import os
import signal
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid):
    """Ask for SIGKILL when the parent dies; if it already has (we were
    reparented before the request took effect), exit now."""
    watched = False
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        watched = True
    if os.getppid() != parent_pid:
        os._exit(3)
    if not watched:
        def watch():
            while os.getppid() == parent_pid:
                time.sleep(1)
            os._exit(3)
        threading.Thread(target=watch, name="die-with-parent", daemon=True).start()
