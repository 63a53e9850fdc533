"""torchvision transforms v2 pipelines for classification, and the batch collate with mixup/cutmix."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import default_collate
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def train_transform(img: int, scale: float = 0.08, hflip: float = 0.5, randaugment: bool = False) -> v2.Compose:
    """Random resized crop, flip, optional RandAugment, then float and ImageNet normalisation."""
    t = [v2.ToImage(), v2.RandomResizedCrop(img, scale=(scale, 1.0), antialias=True)]
    if hflip:
        t.append(v2.RandomHorizontalFlip(hflip))
    if randaugment:
        t.append(v2.RandAugment())
    return v2.Compose([*t, v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def eval_transform(img: int, crop_pct: float | None = None) -> v2.Compose:
    """Resize to img / crop_pct, centre crop img. Small images (<= 64 px) are not cropped by default."""
    crop_pct = crop_pct or (1.0 if img <= 64 else 0.875)
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(round(img / crop_pct), antialias=True),
            v2.CenterCrop(img),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def batch_mix(num_classes: int, mixup: float = 0.0, cutmix: float = 0.0) -> Callable | None:
    """MixUp and/or CutMix on a batch (one of them at random per batch); None when both alphas are 0."""
    ops = [op(alpha=a, num_classes=num_classes) for op, a in ((v2.MixUp, mixup), (v2.CutMix, cutmix)) if a > 0]
    return None if not ops else ops[0] if len(ops) == 1 else v2.RandomChoice(ops)


class Collate:
    """Drop samples that failed to load (None), count them, stack the rest, optionally mix the batch."""

    def __init__(self, mix: Callable | None = None):
        self.mix = mix

    def __call__(self, items: list) -> dict:
        good = [it for it in items if it is not None]
        if not good:
            return {"images": torch.empty(0), "targets": torch.empty(0, dtype=torch.long), "skipped": len(items)}
        images, targets = default_collate(good)
        if self.mix is not None:
            images, targets = self.mix(images, targets)
        return {"images": images, "targets": targets, "skipped": len(items) - len(good)}
