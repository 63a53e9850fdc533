"""Detection loss, anchor assignment, NMS post-processing and the COCO metric, on a tiny model with the YOLO head API."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.ops import complete_box_iou_loss

from cspnet.data.boxes import postprocess, unletterbox
from cspnet.data.detection import DetRecord, DetSource
from cspnet.engine.metrics_coco import CocoMetric, coco_eval
from cspnet.engine.tasks.detect_loss import LossCfg, YoloLoss


class Head(nn.Module):
    """The YOLO head interface (anchors, strides, num_classes, decode_boxes) with darknet's decode, scale_x_y 1."""

    def __init__(self, nc: int = 3):
        super().__init__()
        self.num_classes, self.strides, self.new_coords, self.scale_x_y = nc, (8, 16), False, (1.0, 1.0)
        self.register_buffer("anchors", torch.tensor([[[8.0, 8.0], [16.0, 12.0]], [[24.0, 24.0], [40.0, 32.0]]]))

    def decode_boxes(self, raw: torch.Tensor, level: int) -> torch.Tensor:
        h, w, s = raw.shape[2], raw.shape[3], self.strides[level]
        gy, gx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        cx = (raw[..., 0].sigmoid() + gx) * s
        cy = (raw[..., 1].sigmoid() + gy) * s
        wh = raw[..., 2:4].exp() * self.anchors[level].view(1, -1, 1, 1, 2)
        return torch.stack([cx, cy, wh[..., 0], wh[..., 1]], -1)


def raw_outputs(bs: int = 2, nc: int = 3, side: int = 64, requires_grad: bool = False) -> list[torch.Tensor]:
    return [(torch.randn(bs, 2, side // s, side // s, 5 + nc) * 0.5).requires_grad_(requires_grad) for s in (8, 16)]


def test_assignment_several_anchors_per_object():
    head = Head()
    loss = YoloLoss(head, LossCfg(iou_thresh=0.3))
    raw = raw_outputs()
    # image 1, class 2: a 16x12 box centred at (20, 30): anchor (1, level 0) exactly, (0, level 0) IoU 1/3
    targets = torch.tensor([[1, 2, 12, 24, 28, 36.0]])
    per_level = loss.assign(raw, targets)
    t, b, a, gy, gx = per_level[0]
    assert sorted(a.tolist()) == [0, 1] and (b == 1).all() and (gx == 2).all() and (gy == 3).all()
    t, b, a, gy, gx = per_level[1]  # and on the next level: anchor 0 (24x24) has IoU 1/3 too
    assert a.tolist() == [0] and (gx.item(), gy.item()) == (1, 1)
    per_level = YoloLoss(head, LossCfg(iou_thresh=1.0)).assign(raw, targets)
    assert [len(x[0]) for x in per_level] == [1, 0] and per_level[0][2].item() == 1  # only the best anchor
    big = torch.tensor([[0, 0, 0, 0, 40, 32.0]])  # best anchor on level 1, cell (1, 1)
    per_level = YoloLoss(head, LossCfg(iou_thresh=1.0)).assign(raw, big)
    assert [len(x[0]) for x in per_level] == [0, 1] and per_level[1][3:] == (torch.tensor([1]), torch.tensor([1]))


def test_loss_parts_and_gradients():
    head = Head()
    raw = raw_outputs(requires_grad=True)
    targets = torch.tensor([[0, 0, 4, 4, 20, 20.0], [1, 2, 12, 24, 28, 36.0], [1, 1, 30, 2, 62, 40.0]])
    total, parts = YoloLoss(head, LossCfg(iou_thresh=1.0))(raw, targets)
    assert torch.isfinite(total) and set(parts) == {"box", "obj", "cls"} and all(v > 0 for v in parts.values())
    total.backward()
    assert all(r.grad is not None and r.grad.abs().sum() > 0 for r in raw)
    # the box part is CIoU on the decoded boxes of the assigned predictions
    loss = YoloLoss(head, LossCfg(iou_thresh=1.0))
    expected = 0.0
    for level, (ti, b, a, gy, gx) in enumerate(loss.assign(raw, targets)):
        if len(ti):
            d = head.decode_boxes(raw[level], level)[b, a, gy, gx]
            xyxy = torch.cat([d[:, :2] - d[:, 2:] / 2, d[:, :2] + d[:, 2:] / 2], 1)
            expected += complete_box_iou_loss(xyxy, targets[ti, 2:], reduction="mean").item()
    assert parts["box"].item() == pytest.approx(expected * 0.05 * 3 / 2, rel=1e-5)
    # background-only batch: objectness only
    total, parts = loss(raw, torch.zeros(0, 6))
    assert torch.isfinite(total) and parts["box"] == 0 and parts["cls"] == 0 and parts["obj"] > 0


def _softplus(z: float) -> float:
    return math.log1p(math.exp(z))


def test_loss_values_by_hand():
    """One object, one assigned prediction on a 32x32 input; every part computed here from its formula.

    The object (class 1 of 3) is 16x12 at centre (20, 30): anchor 1 of level 0 (16x12) in cell (2, 3) is the only
    one assigned (iou_thresh 1.0). That prediction decodes to a 32x12 box at the same centre; its objectness logit
    is 2 and its class logits are (2, -1, 0); every other logit is 0, so every other prediction costs ln 2.
    """
    head = Head()
    raw = [torch.zeros(1, 2, 4, 4, 8), torch.zeros(1, 2, 2, 2, 8)]
    cell = raw[0][0, 1, 3, 2]
    cell[:5] = torch.tensor([0.0, math.log(3), math.log(2), 0.0, 2.0])  # sigmoid 0.5, 0.75: centre (20, 30); w 2x16
    cell[5:] = torch.tensor([2.0, -1.0, 0.0])
    targets = torch.tensor([[0, 1, 12, 24, 28, 36.0]])
    level_weight, nc = 3 / 2, 3  # 3 / number of levels; classes

    # CIoU of the 32x12 prediction (x 4..36) and the 16x12 object (x 12..28), both y 24..36: IoU 1/2, same centre
    iou = 0.5
    v = 4 / math.pi**2 * (math.atan(16 / 12) - math.atan(32 / 12)) ** 2
    ciou = 1 - iou + 0 + v / (1 - iou + v) * v
    box = ciou * 0.05 * level_weight
    # objectness: BCE(2, 1) for the assigned prediction, ln 2 for the others; a mean per level, balanced 4.0 (stride
    # 8) and 1.0 (stride 16), and scaled by (32 / 640)^2 for the input size
    obj_level0 = (31 * math.log(2) + _softplus(2) - 2) / 32
    obj = (4.0 * obj_level0 + 1.0 * math.log(2)) * 1.0 * level_weight * (32 / 640) ** 2

    def cls_bce(pos: float, neg: float) -> float:  # BCE(z, t) = softplus(z) - t z, averaged over the 3 classes
        return (_softplus(2) - neg * 2 + _softplus(-1) + pos + _softplus(0)) / 3

    for smoothing, cls in ((0.0, cls_bce(1.0, 0.0)), (0.2, cls_bce(0.9, 0.1))):
        total, parts = YoloLoss(head, LossCfg(iou_thresh=1.0, label_smoothing=smoothing))(raw, targets)
        expected = {"box": box, "obj": obj, "cls": cls * 0.5 * level_weight * nc / 80}
        assert {k: v.item() for k, v in parts.items()} == pytest.approx(expected, rel=1e-5), smoothing
        assert total.item() == pytest.approx(sum(expected.values()), rel=1e-5)  # times the batch size, 1


def test_ignore_thresh_spares_good_guesses():
    head = Head(nc=1)
    raw = [torch.zeros(1, 2, 8, 8, 6), torch.zeros(1, 2, 4, 4, 6)]
    targets = torch.tensor([[0, 0, 0, 0, 8, 8.0]])  # cell (0, 0) of level 0 decodes to (4, 4, 8, 8): the box itself
    raw[0][0, 0, 1, 0, :2] = torch.tensor([-1e4, 1e4])  # cell (1, 0) anchor 0: pulled onto the box too
    raw[0][..., 4] = 5.0  # confident everywhere
    hi = YoloLoss(head, LossCfg(iou_thresh=1.0, ignore_thresh=0.99))(raw, targets)[1]["obj"]
    lo = YoloLoss(head, LossCfg(iou_thresh=1.0, ignore_thresh=0.3))(raw, targets)[1]["obj"]
    assert lo < hi


def test_postprocess_nms_filters():
    # rows: cx, cy, w, h, obj, p(c0), p(c1)
    pred = torch.tensor(
        [
            [
                [50, 50, 20, 20, 0.9, 0.9, 0.1],
                [51, 51, 20, 20, 0.8, 0.9, 0.1],  # overlaps the first, same class: suppressed
                [51, 51, 20, 20, 0.8, 0.1, 0.9],  # same place, other class: kept
                [10, 10, 4, 4, 0.2, 0.5, 0.5],  # below conf
            ]
        ]
    )
    out = postprocess(pred, conf=0.25, iou=0.5)[0]
    assert out[:, 5].tolist() == [0, 1] and out[0, :4].tolist() == [40, 40, 60, 60]
    assert out[0, 4].item() == pytest.approx(0.81)
    assert postprocess(pred, conf=0.25, iou=0.5, classes=[1])[0][:, 5].tolist() == [1]
    assert len(postprocess(pred, conf=0.25, iou=0.5, max_det=1)[0]) == 1
    multi = postprocess(pred, conf=0.05, iou=0.5, multi_label=True)[0]
    assert len(multi) == 4 and sorted(multi[:, 5].tolist()) == [0, 0, 1, 1]  # the tiny box as both classes


def test_unletterbox():
    b = torch.tensor([[10.0, 26, 50, 66]])
    np.testing.assert_allclose(unletterbox(b, 0.5, (0, 16), (100, 200)), [[20, 20, 100, 100]])


def _source() -> DetSource:
    recs = [
        DetRecord("a.jpg", 100, 80, np.array([[10, 10, 50, 40], [60, 20, 90, 70]], np.float32), np.array([0, 1])),
        DetRecord("b.jpg", 100, 80, np.array([[5, 5, 30, 30]], np.float32), np.array([1])),
        DetRecord("c.jpg", 100, 80),
    ]
    return DetSource(recs, ["cat", "dog"], "test", "voc")


def test_coco_metric_perfect_and_wrong():
    src = _source()
    metric = CocoMetric(src)
    meta = [{"image_id": r.image_id, "ratio": 1.0, "pad": (0, 0), "orig": (80, 100)} for r in src.records]

    def decoded(shift: float) -> torch.Tensor:
        rows = torch.zeros(3, 4, 7)
        for i, r in enumerate(src.records):
            for j, (b, c) in enumerate(zip(r.boxes, r.classes)):
                rows[i, j, :4] = torch.tensor([(b[0] + b[2]) / 2 + shift, (b[1] + b[3]) / 2, b[2] - b[0], b[3] - b[1]])
                rows[i, j, 4], rows[i, j, 5 + c] = 1.0, 0.9
        return rows

    metric.update({"decoded": decoded(0.0)}, {"meta": meta})
    m = metric.compute()
    assert m["map50"] == pytest.approx(1.0) and m["map"] == pytest.approx(1.0)
    assert metric.details["confusion"] == [[1, 0, 0], [0, 2, 0], [0, 0, 0]]
    metric.reset()
    metric.update({"decoded": decoded(25.0)}, {"meta": meta})  # every box shifted off its object
    m = metric.compute()
    assert m["map50"] < 0.2 and metric.details["confusion"][2] != [0, 0, 0]
    assert coco_eval(metric.gt, [])[0].sum() == 0  # no predictions: zeros, no crash


@pytest.mark.parametrize("logit", [60.0, -120.0])
def test_runaway_box_logits_keep_loss_and_gradients_finite(logit):
    """exp(t) * anchor overflowed CIoU's squares (t >> 0) or gave a 0 x 0 box with atan(0 / 0) (t << 0): NaN
    gradients, then NaN weights a step later (seen training yolov4-tiny on 48 images)."""
    raw = raw_outputs(requires_grad=True)
    with torch.no_grad():
        raw[0][..., 2:4] = logit
        raw[1][..., 2:4] = logit
    targets = torch.tensor([[0, 1, 10, 12, 30, 40.0], [1, 0, 20, 20, 60, 50.0]])
    for fn in (YoloLoss(Head(), LossCfg()), YoloLoss(Head(), LossCfg()).per_image):
        total, parts = fn(raw, targets)
        assert torch.isfinite(total) and all(torch.isfinite(v) for v in parts.values())
    total, _ = YoloLoss(Head(), LossCfg())(raw, targets)
    total.backward()
    assert all(torch.isfinite(r.grad).all() for r in raw)
