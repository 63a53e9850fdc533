"""The task registry: `cspnet <task> train|val|predict` for every registered task."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from cspnet.errors import ConfigError


class TaskModule(NamedTuple):
    """A task known by name before it is imported: the module whose import registers it, and its one-line help."""

    module: str
    help: str


# The built-in tasks, by module path: `cspnet --help` lists them from here, and a task's module (with its stack:
# detection brings torchvision's ops and the COCO tools) is imported only when its command or checkpoint is used.
TASK_MODULES: dict[str, TaskModule] = {
    "classify": TaskModule("cspnet.engine.tasks.classify_cli", "train, validate and predict image classifiers"),
    "detect": TaskModule("cspnet.engine.tasks.detect_cli", "train, validate (COCO mAP) and run YOLO detectors"),
}

Command = Callable[[argparse.Namespace], int]


@dataclass
class TaskSpec:
    """A task for the generic engine CLI. `task(cfg(**settings))` builds the Task; the rest is its command line."""

    name: str  # the sub-command and the checkpoint's "task"
    task: type  # the Task class: task(cfg), with a static model_from_meta(meta)
    cfg: type  # dataclass of the task's settings; its fields (nested settings' fields inlined) are `train` options
    help: str = ""  # one line for `cspnet --help`; a task in TASK_MODULES takes its help from there
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
    if not spec.help and spec.name in TASK_MODULES:
        spec.help = TASK_MODULES[spec.name].help
    TASKS[spec.name] = spec
    return spec


def get_task(name: str) -> TaskSpec:
    """The registered task of this name, importing its module on first use."""
    if name not in TASKS and name in TASK_MODULES:
        importlib.import_module(TASK_MODULES[name].module)
        if name not in TASKS:  # a wrong entry in TASK_MODULES: say so rather than "unknown task"
            raise RuntimeError(f"{TASK_MODULES[name].module} was imported but registered no task {name!r}")
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; known: {', '.join(list_tasks())}")
    return TASKS[name]


def list_tasks() -> list[str]:
    return sorted(set(TASKS) | set(TASK_MODULES))
