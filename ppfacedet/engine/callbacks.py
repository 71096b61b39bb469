"""Callbacks hook into the Trainer's loop; each does one job.

Hooks receive the Trainer's ``state`` dict: epoch, iteration, iters_per_epoch,
epochs, losses (floats), lr, images_per_sec, eta_seconds, metrics (after an
evaluation), is_main (rank 0).
"""
import datetime
import os
import time

from ..core.logger import get_logger
from .checkpoint import atomic_save

LOG = get_logger()


class Callback:
    def on_train_begin(self, trainer, state):
        pass

    def on_step_end(self, trainer, state):
        pass

    def on_epoch_end(self, trainer, state):
        pass

    def on_train_end(self, trainer, state):
        pass


class LogPrinter(Callback):
    """Progress lines: epoch, iteration, every loss term, LR, img/s and ETA."""

    def __init__(self, log_iter):
        self.log_iter = max(1, int(log_iter))

    def on_step_end(self, trainer, state):
        step = state["iteration"] - state["epoch"] * state["iters_per_epoch"]
        if state["is_main"] and (step % self.log_iter == 0 or step == state["iters_per_epoch"]):
            losses = " ".join(f"{k}: {v:.4f}" for k, v in state["losses"].items())
            eta = datetime.timedelta(seconds=int(state["eta_seconds"]))
            LOG.info("epoch %d/%d iter %d/%d  %s  lr: %.6f  %.1f img/s  eta %s",
                     state["epoch"] + 1, state["epochs"], step, state["iters_per_epoch"], losses,
                     state["lr"], state["images_per_sec"], eta)

    def on_train_end(self, trainer, state):
        if state["is_main"] and state.get("skipped_samples"):
            LOG.warning("%d unreadable samples were skipped during training", state["skipped_samples"])


class Evaluator(Callback):
    """WIDER easy/medium/hard AP before training starts (the baseline a run
    is judged against), every ``period`` epochs and after the last."""

    def __init__(self, period):
        self.period = max(1, int(period))

    def on_train_begin(self, trainer, state):
        if state["epoch"] == 0:
            self._evaluate(trainer, state, "initial_metrics", "eval before training")

    def on_epoch_end(self, trainer, state):
        last = state["epoch"] + 1 == state["epochs"]
        if (state["epoch"] + 1) % self.period == 0 or last:
            self._evaluate(trainer, state, "metrics", f"eval after epoch {state['epoch'] + 1}")

    @staticmethod
    def _evaluate(trainer, state, key, title):
        """Rank 0 evaluates; the other ranks wait for it at a barrier rather
        than inside the next step's gradient all-reduce."""
        if state["is_main"]:
            state[key] = trainer.evaluate()
            LOG.info("%s: %s", title, "  ".join(f"{k} AP {v:.4f}" for k, v in state[key].items()))
        trainer.wait_for_all_ranks("waiting for rank 0's evaluation")


class Checkpointer(Callback):
    """``latest.pdckpt`` (everything needed to resume) every ``snapshot_epoch``
    epochs, ``epoch_N.pdparams`` beside it, ``best_model.pdparams`` when the
    target metric improves and ``model_final.pdparams`` at the end."""

    def __init__(self, out_dir, snapshot_epoch, target_metric):
        self.out_dir = out_dir
        self.snapshot_epoch = max(1, int(snapshot_epoch))
        self.target_metric = target_metric

    def on_epoch_end(self, trainer, state):
        if not state["is_main"]:
            return
        epoch = state["epoch"] + 1
        metric = (state.get("metrics") or {}).get(self.target_metric)
        if metric is not None and metric > state.get("best_metric", -1.0):
            state["best_metric"] = metric
            atomic_save(trainer.model_state(), os.path.join(self.out_dir, "best_model.pdparams"))
            LOG.info("new best %s AP %.4f -> best_model.pdparams", self.target_metric, metric)
        if epoch % self.snapshot_epoch == 0 or epoch == state["epochs"]:
            atomic_save(trainer.model_state(), os.path.join(self.out_dir, f"epoch_{epoch}.pdparams"))
            atomic_save(trainer.training_state(), os.path.join(self.out_dir, "latest.pdckpt"))

    def on_train_end(self, trainer, state):
        if state["is_main"]:
            path = os.path.join(self.out_dir, "model_final.pdparams")
            atomic_save(trainer.model_state(), path)
            LOG.info("saved %s", path)


class VisualDLWriter(Callback):
    """Loss terms, LR, throughput and AP as VisualDL scalars
    (view with ``visualdl --logdir <dir> -L en``)."""

    def __init__(self, log_dir):
        self.log_dir = log_dir
        self.writer = None

    def on_train_begin(self, trainer, state):
        if state["is_main"]:
            from visualdl import LogWriter
            self.writer = LogWriter(logdir=self.log_dir)

    def on_step_end(self, trainer, state):
        if self.writer is None:
            return
        it = state["iteration"]
        for key, value in state["losses"].items():
            self.writer.add_scalar(f"train/{key}", value, it)
        self.writer.add_scalar("train/lr", state["lr"], it)
        self.writer.add_scalar("train/images_per_sec", state["images_per_sec"], it)

    def on_epoch_end(self, trainer, state):
        if self.writer is None:
            return
        for key, value in (state.get("metrics") or {}).items():
            self.writer.add_scalar(f"eval/{key}_ap", value, state["epoch"] + 1)

    def on_train_end(self, trainer, state):
        if self.writer is not None:
            self.writer.close()


class StepTimer:
    """Throughput and ETA from a moving average of step times."""

    def __init__(self, window=20):
        self.window = window
        self.times = []
        self.last = time.perf_counter()

    def tick(self):
        now = time.perf_counter()
        self.times = (self.times + [now - self.last])[-self.window:]
        self.last = now
        return sum(self.times) / len(self.times)
