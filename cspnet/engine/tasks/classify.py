"""Image classification on the Trainer: a zoo model, image-folder (or zip) data, cross-entropy, top-1/top-5."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cspnet.data import Collate, ImageDataset, batch_mix, eval_transform, open_split, train_transform
from cspnet.errors import InputError
from cspnet.models import create_model

Stats = dict[str, torch.Tensor]


@dataclass
class ClassifyCfg:
    """What to train on; saved with the run's args."""

    model: str = "cspresnet50"
    data: str = ""
    img: int = 224
    small_input: bool = False
    subset: int | None = None  # random training images to keep (None: all)
    val_subset: int | None = None
    scale: float = 0.08  # smallest crop area of RandomResizedCrop
    randaugment: bool = False
    mixup: float = 0.0
    cutmix: float = 0.0
    label_smoothing: float = 0.0
    weights: str | None = None  # initial weights (a checkpoint or .safetensors)


def model_from_meta(meta: dict, num_classes: int | None = None) -> nn.Module:
    """Rebuild the model a checkpoint was trained with."""
    return create_model(meta["model"], num_classes=num_classes or meta["num_classes"], **meta.get("overrides", {}))


def topk_correct(logits: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
    k = min(k, logits.shape[1])
    return (logits.topk(k, dim=1).indices == target[:, None]).any(dim=1).sum().double()


def classify_stats(logits: torch.Tensor, target: torch.Tensor, loss: torch.Tensor, per_class: bool) -> Stats:
    """Sums over a batch; the Trainer adds them over batches and ranks. target: indices or soft (mixup)."""
    hard = target.argmax(1) if target.ndim == 2 else target
    n = len(hard)
    s = {
        "n": torch.tensor(float(n), dtype=torch.float64),
        "loss": loss.detach().double() * n,
        "top1": topk_correct(logits, hard, 1),
        "top5": topk_correct(logits, hard, 5),
    }
    if per_class:
        c = logits.shape[1]
        pred = logits.argmax(1)
        s["confusion"] = torch.bincount(hard * c + pred, minlength=c * c).reshape(c, c).double()
    return s


def summarize_classify(sums: Stats) -> dict:
    """loss, top1, top5 (percent), and with a confusion matrix per-class accuracy."""
    n = max(sums["n"].item(), 1.0)
    out = {
        "loss": sums["loss"].item() / n,
        "top1": 100 * sums["top1"].item() / n,
        "top5": 100 * sums["top5"].item() / n,
    }
    if "confusion" in sums:
        cm = sums["confusion"]
        out["per_class"] = (100 * cm.diag() / cm.sum(1).clamp(min=1)).tolist()
        out["confusion"] = cm.long().tolist()
    return out


class ClassifyTask:
    """The classification Task for cspnet.engine.Trainer."""

    name = "classify"
    fitness = "val/top1"

    def __init__(self, cfg: ClassifyCfg):
        self.cfg = cfg
        self._train: ImageDataset | None = None
        self._val: ImageDataset | None = None

    def datasets(self) -> tuple[ImageDataset, ImageDataset]:
        if self._train is None:
            c = self.cfg
            self._train = open_split(c.data, "train", train_transform(c.img, c.scale, randaugment=c.randaugment))
            self._val = open_split(c.data, "val", eval_transform(c.img))
            if self._train.classes != self._val.classes:
                raise InputError(
                    f"train has classes {self._train.classes[:5]}..., {self._val.where} has {self._val.classes[:5]}...; "
                    "both splits need the same class folders"
                )
            self._train.subset(c.subset)
            self._val.subset(c.val_subset)
        return self._train, self._val

    @property
    def classes(self) -> list[str]:
        return self.datasets()[0].classes

    def meta(self) -> dict:
        overrides = {"small_input": True} if self.cfg.small_input else {}
        return {
            "model": self.cfg.model,
            "num_classes": len(self.classes),
            "classes": self.classes,
            "img": self.cfg.img,
            "overrides": overrides,
        }

    def build_model(self) -> nn.Module:
        model = model_from_meta(self.meta())
        if self.cfg.weights:
            from cspnet.models.weights import load_into, read_state_dict

            load_into(model, read_state_dict(self.cfg.weights), self.cfg.weights)
        return model

    def collate(self, train: bool) -> Callable:
        c = self.cfg
        return Collate(batch_mix(len(self.classes), c.mixup, c.cutmix) if train else None)

    def forward(self, model: nn.Module, batch: dict, train: bool) -> tuple[torch.Tensor, Stats]:
        logits = model(batch["images"]).float()
        target = batch["targets"].to(logits.device)
        loss = F.cross_entropy(logits, target, label_smoothing=self.cfg.label_smoothing if train else 0.0)
        return loss, classify_stats(logits, target, loss, per_class=not train)

    def summarize(self, sums: Stats) -> dict:
        return summarize_classify(sums)
