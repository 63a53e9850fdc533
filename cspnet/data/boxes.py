"""Box helpers for detection: NMS post-processing (torchvision batched_nms), mapping letterboxed boxes back, and
the shape IoU behind anchor assignment and k-means anchors."""

from __future__ import annotations

import torch
from torchvision.ops import batched_nms, box_convert

from cspnet.errors import InputError


def postprocess(
    pred: torch.Tensor,
    conf: float = 0.25,
    iou: float = 0.45,
    classes: list[int] | None = None,
    max_det: int = 300,
    multi_label: bool = False,
    max_nms: int = 30_000,
) -> list[torch.Tensor]:
    """Decoded (B, N, 5 + C) rows (cx, cy, w, h, objectness, class probs) -> per image (K, 6): x1, y1, x2, y2,
    score, class, best first. score = objectness * class prob; `multi_label` keeps every class above `conf`
    (for mAP), else the best class per box. Per-class NMS by torchvision.ops.batched_nms, at most max_det boxes."""
    out = []
    for p in pred:
        p = p[p[:, 4] > conf]  # objectness bounds every score
        scores = p[:, 5:] * p[:, 4:5]
        boxes = box_convert(p[:, :4], "cxcywh", "xyxy")
        if multi_label:
            i, c = (scores > conf).nonzero(as_tuple=True)
            boxes, s = boxes[i], scores[i, c]
        else:
            s, c = scores.max(1)
            keep = s > conf
            boxes, s, c = boxes[keep], s[keep], c[keep]
        if classes is not None:
            keep = torch.isin(c, torch.as_tensor(classes, device=c.device))
            boxes, s, c = boxes[keep], s[keep], c[keep]
        if len(s) > max_nms:
            top = s.topk(max_nms).indices
            boxes, s, c = boxes[top], s[top], c[top]
        keep = batched_nms(boxes.float(), s.float(), c, iou)[:max_det]
        out.append(torch.cat([boxes[keep], s[keep, None], c[keep, None].to(boxes.dtype)], 1))
    return out


def unletterbox(boxes: torch.Tensor, ratio: float, pad: tuple[int, int], orig_hw: tuple[int, int]) -> torch.Tensor:
    """xyxy boxes in letterboxed pixels -> the original image's pixels, clipped to it."""
    b = boxes.clone()
    b[:, [0, 2]] = ((b[:, [0, 2]] - pad[0]) / ratio).clamp(0, orig_hw[1])
    b[:, [1, 3]] = ((b[:, [1, 3]] - pad[1]) / ratio).clamp(0, orig_hw[0])
    return b


def wh_iou(wh1: torch.Tensor, wh2: torch.Tensor) -> torch.Tensor:
    """IoU of boxes given only as (w, h), aligned at a common centre: (M, 2) x (K, 2) -> (M, K)."""
    inter = torch.minimum(wh1[:, None], wh2[None]).prod(-1)
    return inter / (wh1.prod(-1)[:, None] + wh2.prod(-1)[None] - inter)


def kmeans_anchors(wh: torch.Tensor, n: int = 9, img_size: int = 416, iters: int = 100, seed: int = 0) -> torch.Tensor:
    """Anchors for a dataset: k-means on box (w, h) with distance 1 - wh_iou (boxes sharing a centre), as darknet's
    calc_anchors. `wh` in pixels of the training size `img_size` (or normalised to [0, 1], then scaled by it).
    Returns (n, 2) sorted by area; split it per level (e.g. `.view(3, 3, 2)`).
    """
    wh = torch.as_tensor(wh, dtype=torch.float64).reshape(-1, 2)
    wh = wh[(wh > 0).all(1)]
    if len(wh) < n:
        raise InputError(f"k-means anchors need at least {n} boxes with positive size, got {len(wh)}")
    if wh.max() <= 1.0:
        wh = wh * img_size
    g = torch.Generator().manual_seed(seed)
    centers = wh[torch.randperm(len(wh), generator=g)[:n]].clone()
    assign = None
    for _ in range(iters):
        new = wh_iou(wh, centers).argmax(1)
        if assign is not None and torch.equal(new, assign):
            break
        assign = new
        for k in range(n):
            members = wh[assign == k]
            if len(members):
                centers[k] = members.mean(0)
    return centers[centers.prod(1).argsort()].float()
