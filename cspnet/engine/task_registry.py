"""The task registry: `cspnet <task> train|val|predict` for every registered task."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

from cspnet.errors import ConfigError

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
    cfg: type  # dataclass of the task's settings; its fields (nested settings' fields inlined) are `train` options
    help: str = ""
    add_train_args: Callable[[argparse.ArgumentParser], None] | None = None  # the task's own train options
    train_defaults: dict = field(default_factory=dict)  # TrainCfg defaults for this task (lr, epochs, ...)
    required: tuple[str, ...] = ("model", "data")  # settings a new run must be given
    resume_safe: tuple[str, ...] = ("data",)  # settings that may change on --resume (besides epochs, workers, device)
    add_val_args: Callable[[argparse.ArgumentParser], None] | None = None
    val: Command | None = None  # `cspnet <task> val`
    add_predict_args: Callable[[argparse.ArgumentParser], None] | None = None
    predict: Command | None = None  # `cspnet <task> predict`
    validate: Callable[..., tuple] | None = None  # `val` for Python: (model, meta, data, **options) -> (metrics, ...)


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
