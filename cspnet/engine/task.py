"""What a task (classify, detect, ...) plugs into the engine. Subclass `TaskBase` and override what differs.

Required: `name`, `fitness`, `cfg`, `build_model`, `datasets`, `collate`, `loss`, `metric`, `meta`, and the static
`model_from_meta`. Hooks with defaults: `forward`, `param_groups`, `preprocess`, `on_epoch_start`, `on_epoch_end`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import Dataset

from cspnet.engine.metrics import Metric

# Hooks get the engine's Trainer (engine/trainer.py). It imports this module, so it is not imported back here:
# the layers import one way only.
TrainerLike = Any


class Task(Protocol):
    """The full protocol the Trainer and `evaluate` use."""

    name: str  # registry key and checkpoint tag, e.g. "classify"
    fitness: str  # the metric (higher is better) that picks best.pt, e.g. "val/top1"
    cfg: Any  # a dataclass of the task's settings (model, data, ...); saved with the run's args
    val_loss: bool  # also compute the loss on validation batches

    def build_model(self) -> nn.Module: ...

    @staticmethod
    def model_from_meta(meta: dict) -> nn.Module: ...  # rebuild the architecture from a checkpoint's meta

    def datasets(self) -> tuple[Dataset, Dataset]: ...  # train, val; __getitem__ returns None for unreadable

    def collate(self, train: bool) -> Callable: ...  # -> dict with "images" (N, C, H, W) and "skipped" (int)

    def forward(self, model: nn.Module, batch: dict, train: bool) -> Any: ...  # predictions

    def loss(self, preds: Any, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...

    def metric(self, train: bool) -> Metric | None: ...  # None: no metric on this pass

    def meta(self) -> dict: ...  # plain dict saved in checkpoints; model_from_meta(meta) rebuilds the model

    def param_groups(self, model: nn.Module, weight_decay: float) -> list[dict]: ...

    def preprocess(self, batch: dict, train: bool) -> dict: ...  # on the device, before forward

    def on_epoch_start(self, trainer: TrainerLike, epoch: int) -> None: ...

    def on_epoch_end(self, trainer: TrainerLike, epoch: int, metrics: dict[str, float]) -> None: ...


def default_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weights of convs and linears only: none on norm parameters and biases."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class TaskBase:
    """Defaults for the hooks; a task overrides what it needs."""

    name = "task"
    fitness = "val/loss"
    val_loss = True

    def __init__(self, cfg: Any):
        self.cfg = cfg

    def forward(self, model: nn.Module, batch: dict, train: bool) -> Any:
        """The model's output on the batch's images."""
        return model(batch["images"])

    def metric(self, train: bool) -> Metric | None:
        return None

    def param_groups(self, model: nn.Module, weight_decay: float) -> list[dict]:
        """Optimizer parameter groups; a group may set its own "lr" (the schedule scales every group alike)."""
        return default_param_groups(model, weight_decay)

    def preprocess(self, batch: dict, train: bool) -> dict:
        """Per-batch work on the device (e.g. multi-scale resizing); the batch's tensors are already there."""
        return batch

    def on_epoch_start(self, trainer: TrainerLike, epoch: int) -> None:
        """Before epoch `epoch` (0-based) trains, also on resume: derive state from `epoch` (e.g. close mosaic)."""

    def on_epoch_end(self, trainer: TrainerLike, epoch: int, metrics: dict[str, float]) -> None:
        """After epoch `epoch` was validated and logged, before its checkpoint."""
