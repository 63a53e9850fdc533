"""Training and measuring budgets: one recipe for every variant of a study.

smoke: seconds, for tests. cpu: CIFAR-10 on a 2-core CPU, an estimated 0.9-1.8 hours for the default grid (6 variants,
1 seed; measured in docs/results/ablation.md). converge: a pair on all of CIFAR-10 for 12 epochs
(benchmarks/convergence.py; a GPU); converge_cpu: 16 epochs on a 2-core CPU with the usual stem (neither reached a
plateau); plateau_cpu: the evidence study (docs/results/protocol.md). full: the paper's ImageNet setting (darknet cfgs: batch 128,
lr 0.1, momentum 0.9, decay 5e-4, 1000 warm-up steps; 1.6M steps for dense nets = 160 epochs, 800k for the others =
80 epochs) with the engine's cosine schedule in place of darknet's poly, for ImageNet-style folders under torchrun.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cspnet.engine.config import TrainCfg
from cspnet.errors import ConfigError

if TYPE_CHECKING:
    from cspnet.engine.tasks.classify import ClassifyCfg

# may differ between sittings and machines (measurements record their own settings); the rest is the recipe
RUNTIME = ("workers", "device", "amp", "threads", "latency_batches", "latency_runs", "latency_warmup", "train_batch")


@dataclass(frozen=True)
class Budget:
    """What every variant is trained and measured with."""

    name: str
    img: int = 32
    epochs: int = 1
    subset: int | None = None  # training images (None: all)
    val_subset: int | None = None  # validation images (None: all)
    batch: int = 64
    lr: float = 0.1
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.5
    cooldown_epochs: int = 0  # last epochs at the final lr (the curve settles there)
    scale: float = 0.35  # smallest crop area of the random resized crop
    small_input: bool = False  # stem without downsampling (32x32 images)
    ema: bool = True
    ema_decay: float = 0.9998  # the engine's default; a horizon of 1/(1-decay) steps
    # runtime (not part of the recipe)
    workers: int = 2
    device: str = "auto"
    amp: str = "auto"
    threads: int | None = None  # torch threads for the CPU measurements
    # measurement
    latency_batches: tuple[int, ...] = (1, 8)
    latency_runs: int = 20
    latency_warmup: int = 3
    train_batch: int = 8  # batch of the timed training steps (CPU, interleaved)

    def recipe(self) -> dict:
        """The settings that must match for results to be comparable (what study.json pins)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in RUNTIME and k != "name"}

    def held_to(self, epochs: int) -> Budget:
        """The same recipe run to `epochs`: the added epochs at the final lr (the cosine still ends where it did), so
        a finished run continues from its last.pt as if it had been planned this long."""
        if epochs < self.epochs:
            raise ConfigError(
                f"cannot shorten a run from {self.epochs} to {epochs} epochs; pass at least {self.epochs}"
            )
        return dataclasses.replace(self, epochs=epochs, cooldown_epochs=self.cooldown_epochs + epochs - self.epochs)

    def train_cfg(self, seed: int, save_dir: str) -> TrainCfg:
        """How the engine trains one variant: the budget's fields that are TrainCfg fields (epochs, lr, ema_decay...)."""
        return TrainCfg(**_shared(self, TrainCfg), seed=seed, save_dir=save_dir)

    def classify_cfg(self, model: str, data: str) -> ClassifyCfg:
        """What one variant trains on: the budget's fields that are ClassifyCfg fields (img, subset, scale...)."""
        from cspnet.engine.tasks.classify import ClassifyCfg

        return ClassifyCfg(model=model, data=data, **_shared(self, ClassifyCfg))


def _shared(budget: Budget, cfg: type) -> dict:
    names = {f.name for f in dataclasses.fields(cfg)}
    return {k: v for k, v in dataclasses.asdict(budget).items() if k in names}


BUDGETS = {
    "smoke": Budget(
        "smoke", img=32, epochs=1, subset=64, val_subset=32, batch=16, workers=0, latency_runs=2, latency_warmup=1
    ),
    # sized by `python benchmarks/ablation_doc.py --estimate-budget` (docs/results/ablation.md, "Budget")
    "cpu": Budget("cpu", img=32, epochs=4, subset=20000, val_subset=None, batch=64, workers=1),
    # a CSP/plain pair on all 50,000 CIFAR-10 images, small-input stem (the usual CIFAR nets); a 10-epoch GPU run of it
    # did not reach a plateau (docs/results/convergence_gpu.md)
    "converge": Budget(
        "converge", img=32, epochs=12, batch=256, lr=0.2, warmup_epochs=1.0, small_input=True, workers=4
    ),
    # the same question on a 2-core CPU: the usual stem (8x8 after it, about 1/14 of the small-input stem's MACs), a
    # cosine then 2 epochs held at the final lr; top-1 still rose 0.4-0.6 points over the last 3 of 16 epochs
    # (docs/results/convergence.md)
    "converge_cpu": Budget(
        "converge_cpu", img=32, epochs=16, cooldown_epochs=2, batch=256, lr=0.2, warmup_epochs=1.0, workers=1
    ),
    # docs/results/evidence.md: the pair to a plateau on a 2-core CPU (protocol: docs/results/protocol.md): 30 epochs
    # of cosine, then 10 held at the final lr, so the plateau criterion compares two windows at that lr; EMA horizon
    # 500 steps (~2.5 epochs of 196 steps: the default 0.9998 would average over ~25 epochs)
    "plateau_cpu": Budget(
        "plateau_cpu",
        img=32,
        epochs=40,
        cooldown_epochs=10,
        batch=256,
        lr=0.2,
        warmup_epochs=1.0,
        ema_decay=0.998,
        workers=1,
    ),
    "full": Budget(
        "full", img=224, epochs=0, batch=128, lr=0.1, weight_decay=5e-4, warmup_epochs=0.1, scale=0.08, workers=8
    ),
}
FULL_EPOCHS = {"dense": 160, "other": 80}  # darknet max_batches x batch 128 / 1.28M ImageNet images


def get_budget(name: str, base: str, **changes) -> Budget:
    """A named budget with command-line changes (None values ignored); full picks its epochs from the base."""
    if name not in BUDGETS:
        raise ConfigError(f"unknown budget {name!r}; choose one of {', '.join(BUDGETS)}")
    b = BUDGETS[name]
    if name == "full":
        from cspnet.models import build_cfg

        dense = any(s.growth_rate for s in build_cfg(base).stages)
        b = dataclasses.replace(b, epochs=FULL_EPOCHS["dense" if dense else "other"])
    b = dataclasses.replace(b, **{k: v for k, v in changes.items() if v is not None})
    b = dataclasses.replace(b, subset=b.subset or None, val_subset=b.val_subset or None)  # 0: all images
    if b.epochs < 1 or b.batch < 1 or b.img < 8:
        raise ConfigError("epochs and batch must be at least 1 and img at least 8")
    if b.subset is not None and b.subset < b.batch:
        raise ConfigError(f"subset {b.subset} is smaller than one batch ({b.batch}); raise --subset or lower --batch")
    return b
