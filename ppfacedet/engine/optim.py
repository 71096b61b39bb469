"""Optimizers and learning-rate schedules, built by name from config.

Schedules are pure functions of the global iteration, so resuming needs no
scheduler state: the Trainer sets ``lr_at(iteration)`` before every step.
"""
import math

import paddle

from ..core.config import read_section
from ..core.errors import ConfigError
from ..core.registry import LR_SCHEDULES, OPTIMIZERS

# ``base_batch_size``: the total batch (per GPU x GPUs) the recipe's base_lr is
# for; None when the config states no recipe batch (nothing to scale against).
AUTO_SCALE_LR_DEFAULTS = {"enable": True, "base_batch_size": None}


def _grad_clip(clip_grad_norm):
    return paddle.nn.ClipGradByGlobalNorm(float(clip_grad_norm)) if clip_grad_norm else None


@OPTIMIZERS.register
class Momentum:
    """SGD with momentum and L2 weight decay (the recipe of every official face detector)."""

    def __init__(self, momentum=0.9, weight_decay=5e-4, nesterov=False, clip_grad_norm=None):
        self.momentum, self.weight_decay = float(momentum), float(weight_decay)
        self.nesterov, self.clip_grad_norm = bool(nesterov), clip_grad_norm

    def __call__(self, parameters, lr):
        return paddle.optimizer.Momentum(
            learning_rate=lr, momentum=self.momentum, parameters=parameters, use_nesterov=self.nesterov,
            weight_decay=paddle.regularizer.L2Decay(self.weight_decay), grad_clip=_grad_clip(self.clip_grad_norm))


@OPTIMIZERS.register
class AdamW:
    def __init__(self, weight_decay=0.05, beta1=0.9, beta2=0.999, clip_grad_norm=None):
        self.weight_decay, self.beta1, self.beta2 = float(weight_decay), float(beta1), float(beta2)
        self.clip_grad_norm = clip_grad_norm

    def __call__(self, parameters, lr):
        return paddle.optimizer.AdamW(learning_rate=lr, parameters=parameters, beta1=self.beta1,
                                      beta2=self.beta2, weight_decay=self.weight_decay,
                                      grad_clip=_grad_clip(self.clip_grad_norm))


class _WarmupSchedule:
    """Linear warmup from ``warmup_ratio * base_lr`` over ``warmup_iters``."""

    def __init__(self, base_lr, warmup_iters, warmup_ratio):
        self.base_lr = float(base_lr)
        self.warmup_iters = int(warmup_iters)
        self.warmup_ratio = float(warmup_ratio)

    def lr_at(self, iteration, iters_per_epoch, epochs):
        lr = self.base_lr * self.decay(iteration, iters_per_epoch, epochs)
        if iteration < self.warmup_iters:
            alpha = iteration / self.warmup_iters
            lr *= self.warmup_ratio + (1 - self.warmup_ratio) * alpha
        return lr


@LR_SCHEDULES.register
class WarmupStep(_WarmupSchedule):
    """Multiply by ``gamma`` at each epoch in ``milestones``."""

    def __init__(self, base_lr=0.01, milestones=(), gamma=0.1, warmup_iters=500, warmup_ratio=0.001):
        super().__init__(base_lr, warmup_iters, warmup_ratio)
        self.milestones = sorted(int(m) for m in milestones)
        self.gamma = float(gamma)

    def decay(self, iteration, iters_per_epoch, epochs):
        epoch = iteration // max(1, iters_per_epoch)
        return self.gamma ** sum(epoch >= m for m in self.milestones)


@LR_SCHEDULES.register
class WarmupCosine(_WarmupSchedule):
    """Cosine from base_lr down to ``min_lr_ratio * base_lr`` at the last iteration."""

    def __init__(self, base_lr=0.01, min_lr_ratio=0.0, warmup_iters=500, warmup_ratio=0.001):
        super().__init__(base_lr, warmup_iters, warmup_ratio)
        self.min_lr_ratio = float(min_lr_ratio)

    def decay(self, iteration, iters_per_epoch, epochs):
        progress = min(1.0, iteration / max(1, iters_per_epoch * epochs))
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def scaled_base_lr(cfg, base_lr, launched_batch):
    """``(lr, note)``: the base LR for a launched total batch (per process x
    processes) and, when that batch is not the recipe's, a sentence saying so.
    The linear scaling rule (Goyal et al. 2017, mmdet's ``auto_scale_lr``)
    multiplies the LR by launched / recipe batch unless ``auto_scale_lr.enable``
    is false."""
    settings = read_section(cfg, "auto_scale_lr", AUTO_SCALE_LR_DEFAULTS)
    recipe_batch = settings["base_batch_size"]
    if recipe_batch is None or int(recipe_batch) == int(launched_batch):
        return base_lr, None
    if int(recipe_batch) <= 0:
        raise ConfigError(f"{cfg.where('auto_scale_lr.base_batch_size')}: auto_scale_lr.base_batch_size "
                          f"must be positive, got {recipe_batch}")
    note = f"launched total batch {launched_batch} differs from the recipe's {recipe_batch}"
    if not settings["enable"]:
        return base_lr, f"{note}; auto_scale_lr.enable is false, so base LR stays {base_lr:g}"
    lr = base_lr * int(launched_batch) / int(recipe_batch)
    return lr, (f"{note}: base LR {base_lr:g} -> {lr:g} by the linear scaling rule "
                f"(-o auto_scale_lr.enable=false keeps {base_lr:g})")
