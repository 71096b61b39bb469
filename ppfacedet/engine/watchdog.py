"""The progress watchdog: a run that stops making progress ends, loudly.

Every finished training step and every evaluated image beats it. When none
comes for ``watchdog_minutes`` (config, default 30) it logs which stage
stalled, writes the Python stacks of the trainer's threads and of its loader
workers to stderr, and ends the process with ``EXIT_STALLED``, so a job on a
rented GPU never waits silently forever.

It ends the process from its own thread with ``os._exit`` on purpose: a stall
is the main thread stuck in native code (a C++ queue waiting for a batch that
never comes, a deadlocked kernel), where no exception raised into Python
would ever be seen. Loader workers are killed first; they would also die on
their own with the trainer (data/loader_workers.py).
"""
import contextlib
import faulthandler
import math
import os
import signal
import sys
import threading
import time

from ..core.errors import PPFaceDetError
from ..core.logger import get_logger
from ..data.loader_workers import STACKS_SIGNAL, worker_pids

LOG = get_logger()
EXIT_STALLED = 3
DEFAULT_MINUTES = 30
STACKS_WAIT_SECONDS = 1.0  # for a worker to write its stacks before it is killed


class ProgressWatchdog:
    def __init__(self, timeout_s, clock=time.monotonic):
        self.timeout_s = float(timeout_s)
        self.clock = clock
        self._stage = "starting"
        self._last_beat = clock()
        self._paused = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None

    @classmethod
    def from_config(cls, cfg):
        minutes = cfg.get("watchdog_minutes", DEFAULT_MINUTES)
        try:
            minutes = float(minutes)
        except (TypeError, ValueError):
            raise PPFaceDetError(f"{cfg.where('watchdog_minutes')}: watchdog_minutes: '{minutes}' is not a "
                                 "number of minutes (0: no watchdog)") from None
        if minutes < 0:
            raise PPFaceDetError(f"{cfg.where('watchdog_minutes')}: watchdog_minutes: {minutes:g} is negative; "
                                 "give minutes, or 0 for no watchdog")
        return cls(minutes * 60 if minutes else math.inf)

    def start(self):
        """Watch from a thread of its own; also makes ``kill -USR1 <pid>``
        print this process's stacks (as loader workers do)."""
        self.beat()
        faulthandler.register(STACKS_SIGNAL, file=sys.stderr, all_threads=True)
        if math.isinf(self.timeout_s):
            return
        self._thread = threading.Thread(target=self._watch, name="progress-watchdog", daemon=True)
        self._thread.start()

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def beat(self):
        with self._lock:
            self._last_beat = self.clock()

    @contextlib.contextmanager
    def stage(self, name):
        """Name what the run is doing (for the report); entering a stage counts as progress."""
        with self._lock:
            previous, self._stage, self._last_beat = self._stage, name, self.clock()
        try:
            yield
        finally:
            with self._lock:
                self._stage = previous

    @contextlib.contextmanager
    def paused(self, why):
        """Waiting on another process that has a watchdog of its own (rank 0's
        evaluation): not a stall of this one."""
        with self._lock:
            self._paused += 1
        try:
            with self.stage(why):
                yield
        finally:
            with self._lock:
                self._paused -= 1
                self._last_beat = self.clock()

    def stalled_for(self):
        """Seconds without progress, or None while paused."""
        with self._lock:
            return None if self._paused else self.clock() - self._last_beat

    def _watch(self):
        while not self._stop.wait(min(30.0, max(0.1, self.timeout_s / 10))):
            idle = self.stalled_for()
            if idle is not None and idle >= self.timeout_s:
                self._end_stalled(idle)

    def _end_stalled(self, idle):
        LOG.error("training stalled: no training step and no evaluation image finished for %.1f min while "
                  "'%s' (watchdog_minutes: %g). The Python stacks of the trainer and its loader workers follow "
                  "on stderr; exiting with status %d.", idle / 60, self._stage, self.timeout_s / 60,
                  EXIT_STALLED)
        sys.stderr.write(f"--- stacks of the trainer (pid {os.getpid()}) ---\n")
        sys.stderr.flush()
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        for pid in worker_pids(os.getpid()):
            sys.stderr.write(f"--- stacks of loader worker pid {pid} ---\n")
            sys.stderr.flush()
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, STACKS_SIGNAL)
                time.sleep(STACKS_WAIT_SECONDS)
                os.kill(pid, signal.SIGKILL)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_STALLED)
