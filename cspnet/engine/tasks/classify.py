"""Image classification on the engine: a zoo model, image-folder (or zip) data, cross-entropy, top-1/top-5."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cspnet.data import Collate, ImageDataset, batch_mix, eval_transform, open_split, train_transform
from cspnet.engine.metrics import SumMetric
from cspnet.engine.task import TaskBase
from cspnet.errors import InputError
from cspnet.models import create_model
from cspnet.models.img_size import check_img_size, stride_of

MAX_CLASSES = 1_000_000  # a checkpoint claiming more is damaged or tampered with


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


def check_meta(meta: dict) -> None:
    """A classification checkpoint's meta must be self-consistent before a model is built from it."""
    n, classes = meta.get("num_classes"), meta.get("classes")
    if not isinstance(meta.get("model"), str):
        raise InputError(f"checkpoint metadata names no model (model={meta.get('model')!r}); it is damaged")
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_CLASSES:
        raise InputError(f"checkpoint metadata has num_classes={n!r}; expected a count of classes, it is damaged")
    if not isinstance(classes, list) or len(classes) != n:
        have = len(classes) if isinstance(classes, list) else "no"
        raise InputError(f"checkpoint metadata lists {have} class names for a {n}-class head; it is damaged")
    if not isinstance(meta.get("overrides", {}), dict):
        raise InputError("checkpoint metadata has malformed model overrides; it is damaged")


def model_from_meta(meta: dict, num_classes: int | None = None) -> nn.Module:
    """Rebuild the model a checkpoint was trained with."""
    return create_model(meta["model"], num_classes=num_classes or meta["num_classes"], **meta.get("overrides", {}))


def topk_correct(logits: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
    k = min(k, logits.shape[1])
    return (logits.topk(k, dim=1).indices == target[:, None]).any(dim=1).sum().double()


class TopKAccuracy(SumMetric):
    """Top-1 and top-5 accuracy (percent); with per_class, also the confusion matrix and per-class accuracy.

    After compute(): `.confusion` (rows: true class) and `.per_class` (percent) lists when per_class is on.
    """

    def __init__(self, per_class: bool = False):
        self.per_class_on = per_class
        self.confusion: list[list[int]] | None = None
        self.per_class: list[float] | None = None
        super().__init__()

    def stats(self, logits: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        logits = logits.detach().float()
        target = batch["targets"]
        hard = target.argmax(1) if target.ndim == 2 else target  # soft (mixup) targets: their largest class
        s = {"n": float(len(hard)), "top1": topk_correct(logits, hard, 1), "top5": topk_correct(logits, hard, 5)}
        if self.per_class_on:
            c = logits.shape[1]
            s["confusion"] = torch.bincount(hard * c + logits.argmax(1), minlength=c * c).reshape(c, c).double()
        return s

    def summarize(self, sums: dict[str, torch.Tensor]) -> dict[str, float]:
        n = max(float(sums.get("n", 0.0)), 1.0)
        if "confusion" in sums:
            cm = sums["confusion"]
            self.per_class = (100 * cm.diag() / cm.sum(1).clamp(min=1)).tolist()
            self.confusion = cm.long().tolist()
        return {"top1": 100 * float(sums.get("top1", 0.0)) / n, "top5": 100 * float(sums.get("top5", 0.0)) / n}


class ClassifyTask(TaskBase):
    """The classification Task for cspnet.engine.Trainer."""

    name = "classify"
    fitness = "val/top1"

    def __init__(self, cfg: ClassifyCfg):
        super().__init__(cfg)
        self._train: ImageDataset | None = None
        self._val: ImageDataset | None = None

    def datasets(self) -> tuple[ImageDataset, ImageDataset]:
        if self._train is None:
            c = self.cfg
            small = {"small_input": True} if c.small_input else {}
            check_img_size(c.img, stride_of(c.model, **small))  # the size rule of every command, before the data
            self._train = open_split(c.data, "train", train_transform(c.img, c.scale, randaugment=c.randaugment))
            self._val = open_split(c.data, "val", eval_transform(c.img))
            if len(self._train.classes) < 2:
                raise InputError(
                    f"{self._train.where} has one class ({self._train.classes[0]}): a classifier needs at least two "
                    "class folders (one class always scores 100%)"
                )
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

    @staticmethod
    def model_from_meta(meta: dict) -> nn.Module:
        check_meta(meta)
        return model_from_meta(meta)

    def build_model(self) -> nn.Module:
        model = model_from_meta(self.meta())
        if self.cfg.weights:
            from cspnet.models.weights import load_into

            load_into(model, self.cfg.weights)
        return model

    def collate(self, train: bool) -> Callable:
        c = self.cfg
        return Collate(batch_mix(len(self.classes), c.mixup, c.cutmix) if train else None)

    def forward(self, model: nn.Module, batch: dict, train: bool) -> torch.Tensor:
        return model(batch["images"]).float()

    def loss(self, logits: torch.Tensor, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        smoothing = self.cfg.label_smoothing if torch.is_grad_enabled() else 0.0  # none on validation (no_grad)
        return F.cross_entropy(logits, batch["targets"], label_smoothing=smoothing), {}

    def metric(self, train: bool) -> TopKAccuracy:
        return TopKAccuracy(per_class=not train)
