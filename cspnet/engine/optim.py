"""The optimizer, the learning-rate schedule (linear warm-up, cosine, then a hold) and the EMA a TrainCfg asks for."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from cspnet.engine.config import TrainCfg
from cspnet.errors import ConfigError


def lr_factor(step: int, warmup: int, total: int, min_lr: float) -> float:
    """Linear warm-up for `warmup` steps, then cosine from 1 down to min_lr at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr + (1 - min_lr) * 0.5 * (1 + math.cos(math.pi * t))


def build_optimizer(groups: list[dict], c: TrainCfg) -> torch.optim.Optimizer:
    """SGD (Nesterov) or AdamW over the task's parameter groups."""
    if c.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=c.lr, momentum=c.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=c.lr)


def build_scheduler(
    optimizer: torch.optim.Optimizer, c: TrainCfg, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per optimizer step: warm-up, cosine to min_lr over epochs - cooldown_epochs, then min_lr held."""
    if not 0 <= c.cooldown_epochs < c.epochs:
        raise ConfigError(
            f"cooldown_epochs {c.cooldown_epochs} must be at least 0 and below epochs {c.epochs}; "
            "lower --cooldown-epochs or raise --epochs"
        )
    warmup = round(c.warmup_epochs * steps_per_epoch)
    total = (c.epochs - c.cooldown_epochs) * steps_per_epoch
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, warmup, total, c.min_lr))


def ema_fn(decay: float) -> Callable:
    """EMA with a warm-up, min(decay, (1 + n) / (10 + n)), so short runs are not dominated by the initial weights."""

    def update(ema_params, params, num_averaged) -> None:
        n = int(num_averaged)
        get_ema_multi_avg_fn(min(decay, (1 + n) / (10 + n)))(ema_params, params, num_averaged)

    return update


def build_ema(model: nn.Module, c: TrainCfg) -> AveragedModel | None:
    """The EMA of the weights and buffers (None when --no-ema)."""
    return AveragedModel(model, multi_avg_fn=ema_fn(c.ema_decay), use_buffers=True) if c.ema else None
