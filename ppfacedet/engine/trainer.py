"""The one training loop every family shares.

It calls only the Detector contract (forward, loss) and hands everything
else to callbacks, so no family ever adds a branch here.
"""
import math
import os
import random

import numpy as np
import paddle
import paddle.distributed as dist

from ..core.cpu_threads import set_math_threads, threads_for
from ..core.errors import PPFaceDetError
from ..core.logger import get_logger
from ..core.registry import LR_SCHEDULES, OPTIMIZERS
from ..data.loader import build_train_loader, unpack_batch
from ..data.preprocess import InputPolicy
from ..modeling.detector import build_model
from ..modeling.frozen_norms import batchnorms, kept_in_inference_mode
from . import callbacks as cb
from .batchnorm_stats import follow_torch_running_variance
from .checkpoint import portable_optimizer_state, read_checkpoint, restore_optimizer_state
from .metrics import build_metric
from .optim import scaled_base_lr
from .pretrain import load_pretrained
from .sync_batchnorm import convert_sync_batchnorm
from .watchdog import ProgressWatchdog

LOG = get_logger()
MAX_CONSECUTIVE_BAD_STEPS = 10


class TrainingError(PPFaceDetError):
    pass


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    paddle.seed(seed)


class Trainer:
    def __init__(self, cfg, use_vdl=False, evaluate_during_training=False, amp=False):
        self.cfg = cfg
        self.world_size = dist.get_world_size()
        self.is_main = dist.get_rank() == 0
        if self.world_size > 1:
            dist.init_parallel_env()
        self.cpu_threads = threads_for(cfg.get("cpu_threads"), self.world_size)
        set_math_threads(self.cpu_threads)
        seed_everything(int(cfg.get("seed", 0)))
        self.model = build_model(cfg)
        self._sync_batchnorm(bool(cfg.get("sync_bn", False)))
        follow_torch_running_variance(self.model)  # the official recipes' BN statistics (batchnorm_stats.py)
        self.policy = InputPolicy.from_config(cfg)
        self.out_dir = os.path.join(cfg.get("save_dir", "output"), getattr(cfg, "name", "model"))
        self.amp = self._check_amp(amp)
        self.state = {"epoch": 0, "iteration": 0, "best_metric": -1.0, "skipped_samples": 0,
                      "epochs": int(cfg.get("epochs", 1)), "is_main": self.is_main}
        self.callbacks = self._build_callbacks(use_vdl, evaluate_during_training)
        self.watchdog = ProgressWatchdog.from_config(cfg)

    # -- set-up ---------------------------------------------------------------
    def _check_amp(self, amp):
        if amp and not paddle.is_compiled_with_cuda():
            LOG.warning("--amp needs a GPU (paddle's auto_cast is a no-op on CPU); training in float32")
            return False
        return bool(amp)

    def _build_callbacks(self, use_vdl, evaluate_during_training):
        target = build_metric(self.cfg).target
        callbacks = [cb.LogPrinter(self.cfg.get("log_iter", 20))]
        if evaluate_during_training:
            if "eval_dataset" not in self.cfg:
                raise PPFaceDetError(f"--eval needs an 'eval_dataset' section in {self.cfg.path}")
            callbacks.append(cb.Evaluator(self.cfg.get("eval_period", 1)))
        callbacks.append(cb.Checkpointer(self.out_dir, self.cfg.get("snapshot_epoch", 1), target))
        if use_vdl:
            callbacks.append(cb.VisualDLWriter(os.path.join(self.out_dir, "vdl")))
        return callbacks

    def _sync_batchnorm(self, enabled):
        """``sync_bn: true``: BatchNorm statistics over every process's batch
        (one process: its own, computed the same way, so a run on N processes
        and one on a single process share their arithmetic)."""
        if enabled:
            replaced = convert_sync_batchnorm(self.model)
            if self.is_main:
                LOG.info("sync_bn: %d BatchNorm layers normalise over all %d processes", replaced,
                         self.world_size)

    def _build_optimizer(self, batch_per_process=None):
        """The optimizer; given the per-process batch, the base LR follows the
        launched total batch (``auto_scale_lr``, optim.scaled_base_lr)."""
        opt_cfg = self.cfg.get("optimizer") or {"type": "Momentum"}
        lr_cfg = self.cfg.get("lr_schedule") or {"type": "WarmupStep"}
        self.schedule = LR_SCHEDULES.build(lr_cfg, "lr_schedule")
        if batch_per_process is not None:
            launched = batch_per_process * self.world_size
            self.schedule.base_lr, note = scaled_base_lr(self.cfg, self.schedule.base_lr, launched)
            if note and self.is_main:
                LOG.warning("%s", note)
        factory = OPTIMIZERS.build(opt_cfg, "optimizer")
        return factory(self.model.parameters(), self.schedule.base_lr)

    # -- checkpoints ----------------------------------------------------------
    def model_state(self):
        return self.model.state_dict()

    def training_state(self):
        return {
            "model": self.model.state_dict(),
            "optimizer": portable_optimizer_state(self.optimizer, self.model),
            "epoch": self.state["epoch"] + 1,  # the next epoch to run
            "iteration": self.state["iteration"],
            "best_metric": self.state["best_metric"],
            "python_rng": random.getstate(),
            "numpy_rng": np.random.get_state(),
            "config": getattr(self.cfg, "name", ""),
        }

    def resume(self, path):
        ckpt = read_checkpoint(path)
        self.model.set_state_dict(ckpt["model"])
        self._pending_optimizer_state = ckpt["optimizer"]
        self.state.update(epoch=int(ckpt["epoch"]), iteration=int(ckpt["iteration"]),
                          best_metric=float(ckpt["best_metric"]))
        random.setstate(ckpt["python_rng"])
        np.random.set_state(ckpt["numpy_rng"])
        LOG.info("resumed from %s at epoch %d, iteration %d", path, self.state["epoch"], self.state["iteration"])

    def load_pretrained(self, source):
        """``source``: the ``pretrain_weights`` value (file, URL or {url, sha256}); see engine/pretrain.py."""
        report = load_pretrained(self.model, source, strict=self.cfg.get("pretrain_strict", True),
                                 where=self.cfg.where("pretrain_weights"))
        LOG.info(report.summary())
        if not report.fills_backbone:
            LOG.warning(report.shortfall())

    def _report_frozen_norms(self):
        """Say which BatchNorm layers keep their statistics (``model.norm_eval``,
        modeling/frozen_norms.py), and warn when ``false`` trains away the
        identity statistics of a BN-folded export."""
        total = len(batchnorms(self.model))
        if not self.is_main or total == 0:
            return
        setting, unfolded = self.model.norm_eval, len(kept_in_inference_mode(self.model, "auto"))
        if setting == "auto" and unfolded:
            LOG.info("model.norm_eval=auto: %d of %d BatchNorm layers hold the identity statistics of a "
                     "BN-folded export (mean 0, variance 1 - eps), which only hold in inference mode: they stay "
                     "in inference mode (statistics frozen, scale and shift trained). -o model.norm_eval=false "
                     "trains them with batch statistics", unfolded, total)
        elif setting is True:
            LOG.info("model.norm_eval=true: all %d BatchNorm layers stay in inference mode "
                     "(statistics frozen, scale and shift trained)", total)
        elif setting is False and unfolded:
            LOG.warning("model.norm_eval=false: %d of %d BatchNorm layers hold the identity statistics of a "
                        "BN-folded export, which training replaces with batch statistics: a converted release "
                        "loses its accuracy (-o model.norm_eval=auto keeps them)", unfolded, total)

    # -- the loop -------------------------------------------------------------
    def train(self):
        dataset, sampler, loader = build_train_loader(self.cfg, self.policy)
        iters_per_epoch = len(loader)
        if iters_per_epoch == 0:
            raise PPFaceDetError(f"train_loader: {len(dataset)} images make no full batch of "
                                 f"{sampler.batch_size}; lower train_loader.batch_size")
        self.optimizer = self._build_optimizer(sampler.batch_size)
        if self.is_main:
            LOG.info("training on %d CPU math threads per process, %d x %d images per step", self.cpu_threads,
                     self.world_size, sampler.batch_size)
        if getattr(self, "_pending_optimizer_state", None) is not None:
            restore_optimizer_state(self.optimizer, self.model, self._pending_optimizer_state)
        self._net = paddle.DataParallel(self.model) if self.world_size > 1 else self.model
        scaler = paddle.amp.GradScaler() if self.amp else None
        state = self.state
        state.update(iters_per_epoch=iters_per_epoch, lr=0.0, losses={}, images_per_sec=0.0, eta_seconds=0)
        total_iters = iters_per_epoch * state["epochs"]
        self.watchdog.start()
        try:
            self._run_epochs(loader, sampler, dataset, scaler, total_iters)
        finally:
            self.watchdog.stop()
        return state

    def _run_epochs(self, loader, sampler, dataset, scaler, total_iters):
        state, net = self.state, self._net
        for callback in self.callbacks:
            callback.on_train_begin(self, state)
        self.model.train()
        self._report_frozen_norms()
        bad_steps = 0
        for epoch in range(state["epoch"], state["epochs"]):
            state["epoch"], state["metrics"] = epoch, None
            sampler.set_epoch(epoch)
            dataset.epoch = epoch
            timer = cb.StepTimer()
            with self.watchdog.stage(f"waiting for a batch from the data loader (epoch {epoch + 1})"):
                for loaded in loader:
                    with self.watchdog.stage(f"training step {state['iteration'] + 1}"):
                        bad_steps = self._train_step(net, loaded, scaler, bad_steps, timer, total_iters)
                    self.watchdog.beat()
            with self.watchdog.stage(f"end of epoch {epoch + 1} (evaluation, checkpoints)"):
                for callback in self.callbacks:
                    callback.on_epoch_end(self, state)
        state["epoch"] = state["epochs"] - 1
        for callback in self.callbacks:
            callback.on_train_end(self, state)

    def _train_step(self, net, loaded, scaler, bad_steps, timer, total_iters):
        """One update (or a skipped one); returns the count of consecutive bad steps."""
        state = self.state
        batch = unpack_batch(loaded)
        state["skipped_samples"] += batch["num_skipped"]
        if batch["image"] is None:
            return bad_steps
        lr = self.schedule.lr_at(state["iteration"], state["iters_per_epoch"], state["epochs"])
        self.optimizer.set_lr(lr)
        buffers = self._snapshot_buffers()
        losses = self._forward_loss(net, batch)
        if self._all_finite(losses["loss"]):
            bad_steps = 0
            self._step(losses["loss"], scaler)
        else:
            bad_steps += 1
            self._restore_buffers(buffers)
            LOG.warning("non-finite loss at iteration %d (%s); update skipped",
                        state["iteration"], {k: float(v) for k, v in losses.items()})
            self.optimizer.clear_grad()
            if bad_steps >= MAX_CONSECUTIVE_BAD_STEPS:
                raise TrainingError(
                    f"{bad_steps} consecutive non-finite losses; stopping. The last good checkpoint "
                    f"is {os.path.join(self.out_dir, 'latest.pdckpt')} (if one was saved); "
                    "lower lr_schedule.base_lr or check the data")
        state["iteration"] += 1
        step_time = timer.tick()
        state.update(lr=lr, losses={k: float(v) for k, v in losses.items()},
                     images_per_sec=batch["image"].shape[0] * self.world_size / step_time,
                     eta_seconds=step_time * (total_iters - state["iteration"]))
        for callback in self.callbacks:
            callback.on_step_end(self, state)
        return bad_steps

    def _forward_loss(self, net, batch):
        if self.amp:
            with paddle.amp.auto_cast():
                raw = net(batch["image"])
        else:
            raw = net(batch["image"])
        return self.model.loss(raw, batch)

    def _snapshot_buffers(self):
        """Untrained state (BN running statistics) before a forward: a
        non-finite batch must not leave NaN in it even though its update is
        skipped."""
        return [(t, t.clone()) for t in self.model.state_dict().values() if t.stop_gradient]

    @staticmethod
    def _restore_buffers(snapshot):
        for buffer, saved in snapshot:
            buffer.set_value(saved)

    def _all_finite(self, loss):
        """Whether every process's loss is finite: all ranks must agree to skip
        a step, or the gradient all-reduce would hang."""
        finite = paddle.to_tensor([1.0 if math.isfinite(float(loss)) else 0.0])
        if self.world_size > 1:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        return bool(finite.item() > 0)

    def _step(self, loss, scaler):
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(self.optimizer)
            scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.optimizer.clear_grad()

    def wait_for_all_ranks(self, why):
        """A barrier over the training processes; this process's watchdog
        does not count the wait (the process waited for has its own)."""
        if self.world_size > 1:
            with self.watchdog.paused(why):
                dist.barrier()

    def evaluate(self):
        from .evaluation import evaluate_model
        with self.watchdog.stage("evaluation"):
            return evaluate_model(self.model, self.cfg, on_image=self.watchdog.beat)
