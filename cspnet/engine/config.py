"""How to train: the TrainCfg every task shares (saved as args.yaml and in every checkpoint)."""

from __future__ import annotations

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
