"""How to train: the TrainCfg every task shares; and a task's settings in the flat form of its command line."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

OPTIMIZERS = ("sgd", "adamw")


@dataclass
class TrainCfg:
    """How to train; saved as args.yaml and in every checkpoint."""

    epochs: int = 10
    batch: int = 64  # total over all processes
    lr: float = 0.1
    optimizer: str = "sgd"  # sgd | adamw
    momentum: float = 0.9
    weight_decay: float = 5e-5
    warmup_epochs: float = 1.0
    min_lr: float = 0.01  # final lr as a fraction of lr
    cooldown_epochs: int = 0  # last epochs held at min_lr after the cosine (timm's cooldown), so top-1 can settle
    amp: str = "auto"  # one of amp.AMP_MODES: auto (fp16 on CUDA, off on CPU) | off | bf16 | fp16
    ema: bool = True
    ema_decay: float = 0.9998
    accumulate: int = 1
    channels_last: bool = False
    seed: int = 0
    deterministic: bool = False
    workers: int = 2
    device: str = "auto"
    sync_bn: bool = False
    save_dir: str = "runs/train/exp"  # the CLI passes runs/<task>/<name>


def _nested(value: object) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def flat_values(cfg: object) -> dict:
    """A task's settings as one flat dict: the fields of nested settings (e.g. DetectCfg.aug) inlined by name.

    This is the form of the command line (`--mosaic`, not `--aug.mosaic`), of args.yaml and of a checkpoint's args.
    """
    out: dict = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        inner = flat_values(value) if _nested(value) else {f.name: value}
        clash = set(out) & set(inner)
        if clash:
            raise TypeError(f"{type(cfg).__name__}: {', '.join(sorted(clash))} named twice in its nested settings")
        out.update(inner)
    return out


def from_flat(cls: type, values: dict) -> object:
    """The settings dataclass `cls` (all fields with defaults) from flat values; missing names keep their defaults,
    names that are not settings of `cls` are ignored."""
    base, kw = cls(), {}
    for f in dataclasses.fields(cls):
        default = getattr(base, f.name)
        if _nested(default):
            kw[f.name] = from_flat(type(default), values)
        elif f.name in values:
            kw[f.name] = values[f.name]
    return cls(**kw)
