"""Checkpoints: plain dicts of tensors and primitives, written atomically, read with weights_only=True; and the
model of a training checkpoint rebuilt by its task (`load_model`)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cspnet.engine.task_registry import get_task
from cspnet.errors import InputError
from cspnet.io import atomic_write, torch_load


def save_checkpoint(obj: dict, path: str | Path) -> Path:
    """torch.save atomically: a kill at any moment leaves the old file whole."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint written by save_checkpoint (weights_only=True: tensors and primitives only)."""
    ckpt = torch_load(path, "checkpoint")
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise InputError(f"{path} is not a cspnet training checkpoint (no 'model' entry)")
    return ckpt


def run_device(model: nn.Module, device: str) -> str:
    """The device to run `model` on: "auto" picks CUDA when there is one, but an exported file (the runtime
    wrapper load_model gives) runs on its CPU runtimes."""
    return "cpu" if device == "auto" and not isinstance(model, nn.Module) else device


def load_exported_model(path: str | Path, task: str | None = None) -> tuple[nn.Module, dict, dict]:
    """An exported file (`cspnet export`: .onnx, OpenVINO .xml, .torchscript) as load_model returns a checkpoint:
    the runtime wrapper (deploy.runtime), a meta built from what the file stores, and a stand-in checkpoint."""
    from cspnet.deploy.runtime import load_exported

    model = load_exported(path)
    if task and model.task != task:
        raise InputError(f"{path} is an exported {model.task} model, not a {task} one; use `cspnet {model.task}`")
    if model.nms:
        raise InputError(
            f"{path} was exported with --nms (boxes after NMS inside the graph); val and predict run their own NMS: "
            "export again without --nms to use it here"
        )
    names = list(model.classes or [str(i) for i in range(model.num_classes)])
    meta = {
        "model": model.meta.get("model") or Path(path).stem,
        "num_classes": model.num_classes,
        "classes": names,
        "img": model.img_size,
        "exported": {"format": model.format, "precision": model.precision},
    }
    return model, meta, {"task": model.task, "meta": meta}


def load_model(weights: str | Path, task: str | None = None) -> tuple[nn.Module, dict, dict]:
    """(model in eval mode with the EMA weights when saved, its meta, the checkpoint) from a training checkpoint,
    or from an exported file (then the model is the runtime wrapper: see load_exported_model).

    The architecture comes from the checkpoint's meta (task.model_from_meta); the weights must fit it exactly.
    """
    from cspnet.deploy.runtime import exported_format

    if Path(weights).is_file() and exported_format(weights):
        return load_exported_model(weights, task)
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
