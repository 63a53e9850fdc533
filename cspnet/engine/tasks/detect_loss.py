"""YOLOv4's training loss: CIoU boxes, BCE objectness and classes, several anchors per object (iou_thresh).

Assignment (darknet's, with `iou_thresh`): a ground-truth box is predicted at the cell holding its centre by every
anchor (of any level) whose shape IoU with it exceeds `iou_thresh`, and always by the best anchor. Predictions that
are not assigned but overlap an object by more than `ignore_thresh` get no objectness loss. Boxes come from
`model.head.decode_boxes` (the model's own decode), so the loss trains exactly what inference reads.
Weights follow YOLOv5: box 0.05, obj 1.0, cls 0.5, objectness balanced per level (stride 8: 4.0, 16: 1.0, 32: 0.4).
With one class there is no class term (YOLOv5's choice; the class logit is then not trained and the head scores by
objectness alone, see YoloHead.one_class_logit).

Normalisation: the parts are means over the batch (positives for box and class, weighted cells for objectness),
and their sum is the loss's value, per image, the number logged. Its gradient is that of the sum times the batch
size, YOLOv5's `loss * bs`, so SGD at lr 0.01 works as there at any batch size. Validation scores each image alone
(`per_image`: its loss as a batch of one) and averages over images, so val/loss does not depend on --batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_convert, box_iou, complete_box_iou_loss

from cspnet.data.boxes import wh_iou

BALANCE = {8: 4.0, 16: 1.0, 32: 0.4, 64: 0.1}


@dataclass
class LossCfg:
    box: float = 0.05
    obj: float = 1.0
    cls: float = 0.5
    iou_thresh: float = 0.213  # YOLOv4's: extra anchors per object
    ignore_thresh: float = 0.7
    label_smoothing: float = 0.0


WH_LOGIT_MAX = 4.0  # e^4 = 55x the anchor: beyond any real box at the sizes trained here
WH_MIN = 1e-3  # pixels: the smallest predicted w, h CIoU sees


class YoloLoss:
    """loss(raw, targets) for a model with the YOLO head interface; targets (M, 6): image, class, x1, y1, x2, y2."""

    def __init__(self, head: nn.Module, cfg: LossCfg | None = None):
        self.head, self.cfg = head, cfg or LossCfg()

    def assign(self, raw: list[torch.Tensor], targets: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
        """Per level: (target row, image, anchor, gy, gx) of every (object, anchor) pair that trains a prediction."""
        anchors = self.head.anchors.to(targets.device)  # (L, A, 2)
        num_levels, num_anchors = anchors.shape[:2]
        xyxy = targets[:, 2:6]
        wh = (xyxy[:, 2:] - xyxy[:, :2]).clamp(min=1e-3)
        ious = wh_iou(wh, anchors.reshape(-1, 2).float())  # (M, L*A)
        pos = ious > self.cfg.iou_thresh
        pos[torch.arange(len(targets), device=targets.device), ious.argmax(1)] = True
        t, k = pos.nonzero(as_tuple=True)
        centre = (xyxy[t, :2] + xyxy[t, 2:]) / 2
        out = []
        for level in range(num_levels):
            m = k // num_anchors == level
            h, w = raw[level].shape[2:4]
            stride = self.head.strides[level]
            g = (centre[m] / stride).floor().long()
            gx, gy = g[:, 0].clamp(0, w - 1), g[:, 1].clamp(0, h - 1)
            out.append((t[m], targets[t[m], 0].long(), k[m] % num_anchors, gy, gx))
        return out

    def __call__(self, raw: list[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The batch's loss (value: per image; gradient: times the batch size) and its parts."""
        bs = raw[0].shape[0]
        lbox, lobj, lcls = self.parts(raw, targets)
        loss = lbox + lobj + lcls
        if loss.requires_grad and bs > 1:
            loss.register_hook(lambda g: g * bs)  # YOLOv5's loss * bs, without scaling the number logged
        return loss, {"box": lbox.detach(), "obj": lobj.detach(), "cls": lcls.detach()}

    @torch.no_grad()
    def per_image(self, raw: list[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Each image's loss as a batch of one, averaged over the images: the same at any batch size."""
        targets = targets.to(raw[0].device)
        parts = []
        for i in range(raw[0].shape[0]):
            t = targets[targets[:, 0] == i].clone()
            t[:, 0] = 0
            parts.append(torch.stack(self.parts([r[i : i + 1] for r in raw], t)))
        box, obj, cls = torch.stack(parts).mean(0)
        return box + obj + cls, {"box": box, "obj": obj, "cls": cls}

    def parts(self, raw: list[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(box, obj, cls) weighted means over the batch."""
        c = self.cfg
        raw = [r.float() for r in raw]
        targets = targets.to(raw[0].device).float()
        bs, nl, nc = raw[0].shape[0], len(raw), self.head.num_classes
        img_side = raw[0].shape[2] * self.head.strides[0]
        dev = raw[0].device
        lbox, lobj, lcls = (torch.zeros((), device=dev) for _ in range(3))
        pos_t, neg_t = 1.0 - 0.5 * c.label_smoothing, 0.5 * c.label_smoothing
        for level, (r, (ti, b, a, gy, gx)) in enumerate(zip(raw, self.assign(raw, targets))):
            # exp(t) * anchor overflows CIoU's squares (NaN gradients) once a w/h logit runs away; clamped here only,
            # so a box can still reach WH_LOGIT_MAX e-fold an anchor, and inference decodes as darknet does
            rb = torch.cat([r[..., :2], r[..., 2:4].clamp(max=WH_LOGIT_MAX), r[..., 4:]], -1)
            boxes = self.head.decode_boxes(rb, level)  # (B, A, H, W, 4) cx, cy, w, h
            obj_target = torch.zeros(r.shape[:4], device=dev)
            obj_weight = torch.ones(r.shape[:4], device=dev)
            if len(targets):  # darknet's ignore_thresh: good unassigned guesses are not pushed to background
                with torch.no_grad():
                    pred_xyxy = box_convert(boxes.detach(), "cxcywh", "xyxy")
                    for i in range(bs):
                        gt = targets[targets[:, 0] == i, 2:6]
                        if len(gt):
                            best = box_iou(pred_xyxy[i].reshape(-1, 4), gt).amax(1).view(r.shape[1:4])
                            obj_weight[i][best > c.ignore_thresh] = 0.0
            if len(ti):
                # a w/h logit far below zero decodes to a 0 x 0 box, whose CIoU aspect term is atan(0 / 0); exp(t)
                # is that small only where its gradient is nil anyway
                p = boxes[b, a, gy, gx]
                pbox = box_convert(torch.cat([p[:, :2], p[:, 2:4].clamp(min=WH_MIN)], 1), "cxcywh", "xyxy")
                lbox = lbox + complete_box_iou_loss(pbox, targets[ti, 2:6], reduction="mean")
                obj_target[b, a, gy, gx] = 1.0
                obj_weight[b, a, gy, gx] = 1.0
                if nc > 1:
                    cls_t = torch.full((len(ti), nc), neg_t, device=dev)
                    cls_t[torch.arange(len(ti), device=dev), targets[ti, 1].long()] = pos_t
                    lcls = lcls + F.binary_cross_entropy_with_logits(r[b, a, gy, gx, 5:], cls_t)
            bce = F.binary_cross_entropy_with_logits(r[..., 4], obj_target, weight=obj_weight, reduction="sum")
            lobj = lobj + BALANCE.get(self.head.strides[level], 1.0) * bce / obj_weight.sum().clamp(min=1)
        scale = 3.0 / nl
        lbox = lbox * c.box * scale
        lobj = lobj * c.obj * scale * (img_side / 640) ** 2
        lcls = lcls * c.cls * scale * nc / 80
        return lbox, lobj, lcls
