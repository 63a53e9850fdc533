"""A detector with NMS inside: one graph from images to (boxes, scores, classes), for `cspnet export --nms`.

The whole batch goes through ONE torchvision.ops.nms call: every (image, class) pair gets its own coordinate
offset (torchvision's batched_nms trick), so boxes of different images or classes never suppress each other. That
call exports to a single ONNX NonMaxSuppression (which OpenVINO reads too) and keeps the batch dimension dynamic;
the eager module runs the same arithmetic, so PyTorch and the exported file agree box for box. The outputs are
padded to `max_det` per image: boxes (B, K, 4) xyxy in input pixels, scores (B, K), classes (B, K) int64 with -1
(and score 0) where no box is left.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import box_convert, nms

OUTPUTS = ("boxes", "scores", "classes")


class DetectWithNMS(nn.Module):
    """`model` (eval: decoded (B, N, 5 + C) rows) followed by best-class scoring and per-class NMS, as
    cspnet.data.boxes.postprocess does (score = objectness x class probability, kept above `conf`)."""

    def __init__(self, model: nn.Module, conf: float = 0.25, iou: float = 0.45, max_det: int = 100) -> None:
        super().__init__()
        self.model = model
        self.conf, self.iou, self.max_det = float(conf), float(iou), int(max_det)
        for k in ("in_chans", "num_classes", "stride"):
            if hasattr(model, k):
                setattr(self, k, getattr(model, k))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.select(self.model(x))

    def select(self, pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decoded (B, N, 5 + C) rows -> padded boxes, scores, classes."""
        pred = pred.float()  # torchvision's nms has no fp16/bf16 CPU kernel
        b, n = pred.shape[:2]
        scores, classes = (pred[..., 5:] * pred[..., 4:5]).max(-1)  # (B, N)
        boxes = box_convert(pred[..., :4], "cxcywh", "xyxy")
        image = torch.arange(b, device=pred.device).view(b, 1).expand(b, n)
        flat_boxes, flat_scores = boxes.reshape(-1, 4), scores.reshape(-1)
        group = (image * pred.shape[-1] + classes).reshape(-1)  # one NMS group per (image, class)
        cand = (flat_scores > self.conf).nonzero().squeeze(1)
        cb, cs, cg = flat_boxes[cand], flat_scores[cand], group[cand]
        top = torch.cat([cb.reshape(-1), cb.new_zeros(1)]).max()  # no candidates: no max of an empty tensor
        offset = cg.to(cb.dtype) * (top + 1)
        keep = cand[nms(cb + offset[:, None], cs, self.iou)]  # descending score
        img = keep // n
        rank = torch.nn.functional.one_hot(img, b).cumsum(0).gather(1, img[:, None]).squeeze(1) - 1
        keep, img, rank = keep[rank < self.max_det], img[rank < self.max_det], rank[rank < self.max_det]
        out_boxes = boxes.new_zeros(b, self.max_det, 4)
        out_scores = scores.new_zeros(b, self.max_det)
        out_classes = torch.full((b, self.max_det), -1, dtype=torch.int64, device=pred.device)
        out_boxes[img, rank] = flat_boxes[keep]
        out_scores[img, rank] = flat_scores[keep]
        out_classes[img, rank] = classes.reshape(-1)[keep]
        return out_boxes, out_scores, out_classes


def to_detections(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor) -> list[torch.Tensor]:
    """Padded NMS outputs -> per image (K, 6): x1, y1, x2, y2, score, class, as cspnet.data.boxes.postprocess gives."""
    out = []
    for b, s, c in zip(boxes, scores, classes):
        keep = c >= 0
        out.append(torch.cat([b[keep].float(), s[keep, None].float(), c[keep, None].float()], 1))
    return out
