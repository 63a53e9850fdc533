"""The task registry: `cspnet <task> train|val|predict` for every registered task, and checkpoints rebuilt by task."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from cspnet.errors import ConfigError, InputError

# task name -> the module whose import registers it (imported on first use, so `cspnet` starts fast)
TASK_MODULES: dict[str, str] = {
    "classify": "cspnet.engine.tasks.classify_cli",
    "detect": "cspnet.engine.tasks.detect_cli",
}

Command = Callable[[argparse.Namespace], int]


@dataclass
class TaskSpec:
    """A task for the generic engine CLI. `task(cfg(**settings))` builds the Task; the rest is its command line."""

    name: str  # the sub-command and the checkpoint's "task"
    task: type  # the Task class: task(cfg), with a static model_from_meta(meta)
    cfg: type  # dataclass of the task's settings; its fields are also `train` options of the same names
    help: str = ""
    add_train_args: Callable[[argparse.ArgumentParser], None] | None = None  # the task's own train options
    train_defaults: dict = field(default_factory=dict)  # TrainCfg defaults for this task (lr, epochs, ...)
    required: tuple[str, ...] = ("model", "data")  # settings a new run must be given
    resume_safe: tuple[str, ...] = ("data",)  # settings that may change on --resume (besides epochs, workers, device)
    add_val_args: Callable[[argparse.ArgumentParser], None] | None = None
    val: Command | None = None  # `cspnet <task> val`
    add_predict_args: Callable[[argparse.ArgumentParser], None] | None = None
    predict: Command | None = None  # `cspnet <task> predict`


TASKS: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add a task to the registry (a module listed in TASK_MODULES calls this when imported)."""
    TASKS[spec.name] = spec
    return spec


def get_task(name: str) -> TaskSpec:
    """The registered task of this name, importing its module on first use."""
    if name not in TASKS and name in TASK_MODULES:
        importlib.import_module(TASK_MODULES[name])
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; known: {', '.join(list_tasks())}")
    return TASKS[name]


def list_tasks() -> list[str]:
    return sorted(set(TASKS) | set(TASK_MODULES))


def load_model(weights: str | Path, task: str | None = None) -> tuple[nn.Module, dict, dict]:
    """(model in eval mode with the EMA weights when saved, its meta, the checkpoint) from a training checkpoint.

    The architecture comes from the checkpoint's meta (task.model_from_meta); the weights must fit it exactly.
    """
    from cspnet.engine.checkpoint import load_checkpoint

    ckpt = load_checkpoint(weights)
    name, meta = ckpt.get("task"), ckpt.get("meta")
    if not isinstance(name, str) or not isinstance(meta, dict) or (task and name != task):
        want = f"`cspnet {task} train`" if task else "`cspnet <task> train`"
        raise InputError(f"{weights} is not a {task or 'training'} checkpoint from {want} (task {name!r})")
    model = get_task(name).task.model_from_meta(meta)
    state = ckpt.get("model_ema") or ckpt["model"]
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError) as e:
        first = str(e).strip().splitlines()
        raise InputError(
            f"{weights}: the weights do not fit the model its metadata describes ({first[1].strip() if len(first) > 1 else first[0]}); "
            "the checkpoint was altered or is damaged"
        ) from None
    return model.eval(), meta, ckpt
