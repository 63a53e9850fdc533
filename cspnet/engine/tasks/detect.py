"""Object detection on the engine: a YOLO detector, YOLO/COCO/VOC data, YOLOv4's loss, COCO mAP.

The task supplies what is detection's own and the engine does the rest (EMA, AMP, schedule, resume, DDP, logging):
- parameter groups: weight decay on conv weights only, none on norms and biases;
- per-batch preprocessing on the device: uint8 -> 0..1, and multi-scale training (a random size per batch,
  a multiple of the stride, boxes scaled with the images);
- epoch hooks: mosaic closes for the last `close_mosaic` epochs; labels.png and train_batch.png at the start,
  and the validation artefacts (predictions/ground truth JSON, per-class AP, PR curve, confusion matrix) at the end.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from cspnet.data.detection import DetSource, open_detection
from cspnet.data.detection_aug import AugCfg, DetectionDataset, detection_collate
from cspnet.engine.metrics_coco import CocoMetric
from cspnet.engine.task import TaskBase, default_param_groups
from cspnet.engine.tasks.detect_loss import LossCfg, YoloLoss
from cspnet.errors import ConfigError, InputError
from cspnet.models.img_size import check_img_size, model_stride, stride_of
from cspnet.models.registry import load_detector_backbone
from cspnet.models.weights import load_into

if TYPE_CHECKING:
    from cspnet.engine.trainer import Trainer


@dataclass
class DetectCfg:
    """What to train on and how to augment and score; saved with the run's args.

    `aug` and `loss` are the data's and the loss's own settings; their fields are `train` options of the same names
    (`--mosaic`, `--iou-thresh`), and args.yaml lists them flat (engine.config.flat_values).
    """

    model: str = "yolov4-tiny"
    data: str = ""
    img: int = 416
    weights: str | None = (
        None  # initial weights (any format load_into reads, a published name); other classes: fresh head
    )
    backbone_weights: str | None = None  # the backbone's classification weights: "timm" or a file (neck, head fresh)
    width: float | None = None  # model width multiplier override
    depth: float | None = None  # model depth multiplier override
    backbone: str | None = None  # another zoo backbone under the same neck and head
    auto_anchors: bool = False  # re-estimate the anchors by k-means on the training boxes (darknet's calc_anchors)
    subset: int | None = None  # keep the first N training images (sorted by path)
    val_subset: int | None = None
    val_split: str = "val"
    aug: AugCfg = field(default_factory=AugCfg)  # training augmentation
    close_mosaic: int = 10  # last epochs without mosaic
    multi_scale: float = 0.0  # per batch, a random size in img * [1 - m, 1 + m] (0: off)
    loss: LossCfg = field(default_factory=LossCfg)
    conf: float = 0.001  # validation: score threshold and NMS IoU
    iou: float = 0.6

    def overrides(self) -> dict:
        return {k: getattr(self, k) for k in ("width", "depth", "backbone") if getattr(self, k) is not None}


def unwrap(model: nn.Module) -> nn.Module:
    """The module under DDP / AveragedModel wrappers."""
    while hasattr(model, "module") and not hasattr(model, "head"):
        model = model.module
    return model


class DetectTask(TaskBase):
    """The detection Task for cspnet.engine.Trainer."""

    name = "detect"
    fitness = "val/map"
    val_loss = True

    def __init__(self, cfg: DetectCfg):
        super().__init__(cfg)
        self._train: DetectionDataset | None = None
        self._val: DetectionDataset | None = None
        self._metric: CocoMetric | None = None
        self._loss: YoloLoss | None = None
        self._stride = 32

    # ---- data ---------------------------------------------------------------------------------------------------
    def sources(self) -> tuple[DetSource, DetSource]:
        return self.datasets()[0].source, self.datasets()[1].source

    def datasets(self) -> tuple[DetectionDataset, DetectionDataset]:
        if self._train is None:
            c = self.cfg
            # the size rule before any data is read: a bad --img fails in a moment, with the message of every command
            self._stride = stride_of(c.model, **c.overrides())
            check_img_size(c.img, self._stride)
            if not c.data:
                raise ConfigError("detect needs --data: a data.yaml, a COCO .json or a Pascal VOC folder")
            train, val = open_detection(c.data, "train"), open_detection(c.data, c.val_split)
            if train.names != val.names:
                raise InputError(f"{train.where} and {val.where} name different classes; use one class list")
            from cspnet.engine import dist

            for src, n, split in ((train, c.subset, "train"), (val, c.val_subset, c.val_split)):
                if dist.is_main():
                    print(src.summary(split) + (f"; the first {n} used" if n is not None else ""), flush=True)
                if n is not None:
                    src.records = sorted(src.records, key=lambda r: r.path)[:n]
            self._train = DetectionDataset(train, c.img, train=True, aug=c.aug)
            self._val = DetectionDataset(val, c.img, train=False)
        return self._train, self._val

    def collate(self, train: bool) -> Callable:
        return detection_collate

    # ---- model --------------------------------------------------------------------------------------------------
    def meta(self) -> dict:
        train = self.datasets()[0].source
        return {
            "model": self.cfg.model,
            "num_classes": len(train.names),
            "classes": train.names,
            "category_ids": train.category_ids,
            "img": self.cfg.img,
            "overrides": self.cfg.overrides(),
        }

    @staticmethod
    def model_from_meta(meta: dict) -> nn.Module:
        from cspnet.models import create_model

        model = create_model(meta["model"], num_classes=meta["num_classes"], **meta.get("overrides", {}))
        if not hasattr(model, "head") or not hasattr(model.head, "decode_boxes"):
            raise ConfigError(f"{meta['model']} is not a detector; pick one of `cspnet models 'yolo*'`")
        return model

    def build_model(self) -> nn.Module:
        model = self.model_from_meta(self.meta())
        self._stride = model_stride(model)  # cfg.img was checked against it in datasets()
        if self.cfg.backbone_weights:
            spec = self.cfg.backbone_weights
            load_detector_backbone(model, True if spec == "timm" else spec)
        if self.cfg.weights:
            load_into(model, self.cfg.weights)
        # a darknet model's trained one-class logit goes stale here (the loss has no class term for one class):
        # score by objectness while training, as the saved checkpoint (which does not keep the flag) will
        model.head.one_class_logit = False
        if self.cfg.auto_anchors:
            self.fit_anchors(model)
        return model

    def fit_anchors(self, model: nn.Module) -> None:
        """k-means (1 - IoU) anchors of the training boxes at the letterboxed training size; saved with the weights."""
        import numpy as np

        from cspnet.data.boxes import kmeans_anchors

        src, img = self.datasets()[0].source, self.cfg.img
        wh = [r.boxes[:, 2:] - r.boxes[:, :2] for r in src.records if len(r.boxes)]
        scale = [np.full((len(r.boxes), 1), img / max(r.width, r.height)) for r in src.records if len(r.boxes)]
        wh = torch.from_numpy(np.concatenate(wh) * np.concatenate(scale)).float() if wh else torch.zeros(0, 2)
        shape = model.head.anchors.shape
        anchors = kmeans_anchors(wh, n=shape[0] * shape[1], img_size=img, seed=0).view(shape)
        with torch.no_grad():
            model.head.anchors.copy_(anchors)
        from cspnet.engine import dist

        if dist.is_main():
            print(f"anchors from k-means on {len(wh)} training boxes: {anchors.round().int().tolist()}", flush=True)

    def param_groups(self, model: nn.Module, weight_decay: float) -> list[dict]:
        """Decay on conv weights only (no decay on BatchNorm weights and biases), as YOLOv4/v5 do."""
        return default_param_groups(model, weight_decay)

    # ---- steps --------------------------------------------------------------------------------------------------
    def preprocess(self, batch: dict, train: bool) -> dict:
        images = batch["images"]
        if images.dtype == torch.uint8:
            images = images.float() / 255
        targets = batch["targets"].to(images.device)
        m = self.cfg.multi_scale
        if train and m > 0 and len(images):
            stride = self._stride
            lo, hi = max(stride, self.cfg.img * (1 - m)), self.cfg.img * (1 + m)
            size = max(stride, int(random.uniform(lo, hi) // stride * stride))
            if size != images.shape[-1]:
                r = size / images.shape[-1]
                images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
                targets = torch.cat([targets[:, :2], targets[:, 2:] * r], 1)
        return {**batch, "images": images, "targets": targets}

    def forward(self, model: nn.Module, batch: dict, train: bool) -> dict:
        images = batch["images"]
        if train:
            return {"raw": model(images), "head": unwrap(model).head}  # through DDP's forward
        m = unwrap(model)
        if not hasattr(m, "forward_raw"):  # an exported file: decoded rows only, so no loss
            return {"decoded": model(images), "eval": True, "no_loss": True}
        raw = m.forward_raw(images)
        return {"raw": raw, "decoded": m.head.decode(raw, tuple(images.shape[-2:])), "head": m.head, "eval": True}

    def loss(self, preds: dict, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self._loss is None or self._loss.head is not preds["head"]:
            self._loss = YoloLoss(preds["head"], self.cfg.loss)
        if preds.get("eval"):  # validation: each image's loss alone, so val/loss does not depend on the batch
            return self._loss.per_image(preds["raw"], batch["targets"])
        return self._loss(preds["raw"], batch["targets"])

    def metric(self, train: bool) -> CocoMetric | None:
        if train:
            return None
        if self._metric is None:
            self._metric = CocoMetric(self.datasets()[1].source, conf=self.cfg.conf, iou=self.cfg.iou)
        self._metric.reset()
        return self._metric

    # ---- hooks --------------------------------------------------------------------------------------------------
    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        train = self.datasets()[0]
        total = trainer.cfg.epochs
        if self.cfg.close_mosaic and epoch >= total - self.cfg.close_mosaic and train.mosaic:
            train.close_mosaic()
            if trainer.main:
                print(f"closing mosaic for the last {total - epoch} epoch(s)", flush=True)
        if epoch == trainer.start_epoch and trainer.main and not (trainer.save_dir / "labels.png").exists():
            self.plot_start(Path(trainer.save_dir))

    def plot_start(self, save_dir: Path) -> None:
        """labels.png (label statistics) and train_batch.png (augmented training samples with their boxes)."""
        from cspnet.engine.tasks.detect_plots import plot_batch, plot_labels

        train = self.datasets()[0]
        plot_labels(train.source, save_dir / "labels.png")
        state = torch.get_rng_state()
        torch.manual_seed(0)  # the picture must not move the training's random stream
        n = min(16, len(train))
        batch = detection_collate([train[i] for i in torch.randperm(len(train))[:n].tolist()])
        torch.set_rng_state(state)
        if len(batch["images"]):
            plot_batch(batch["images"], batch["targets"], train.names, save_dir / "train_batch.png")

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        if epoch + 1 == trainer.cfg.epochs and trainer.main and self._metric is not None and self._metric.details:
            paths = self._metric.write(Path(trainer.save_dir) / "val")
            print(f"validation artefacts of the last epoch: {paths['predictions'].parent}", flush=True)
