"""COCO mAP as an engine metric: NMS per batch, predictions gathered from every rank, pycocotools' COCOeval once.

The ground truth is the dataset's records as COCO JSON (`to_coco_gt`), whatever format they came in, and the
predictions are COCO result dicts in the original images' pixels, rounded as written, so `write()` leaves a JSON
pair on which anyone can re-run COCOeval and get the same numbers. The ground truth covers the images that were
scored: one that failed to decode is skipped (and counted), not scored as if the detector had missed its objects.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import json
from pathlib import Path

import numpy as np
import torch

from cspnet.data.boxes import postprocess, unletterbox
from cspnet.data.detection import DetSource, to_coco_gt
from cspnet.engine.metrics import GatherMetric
from cspnet.io import atomic_write


def coco_eval(gt: dict, results: list[dict]) -> tuple[np.ndarray, np.ndarray | None, str, list[int]]:
    """COCOeval on in-memory JSON: (12 summary stats, precision array (T, R, K, A, M), summary text, category ids)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        if not results or not gt["annotations"]:
            return np.zeros(12), None, "no predictions" if not results else "no ground-truth boxes", []
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))  # loadRes adds fields to the dicts it is given
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats), ev.eval["precision"], out.getvalue(), list(ev.params.catIds)


def scored_gt(gt: dict, scored: set[int]) -> dict:
    """The ground truth of the scored images only."""
    return {
        **gt,
        "images": [im for im in gt["images"] if im["id"] in scored],
        "annotations": [a for a in gt["annotations"] if a["image_id"] in scored],
    }


def _intersection(xywh: torch.Tensor, xyxy: torch.Tensor) -> torch.Tensor:
    """(N, K) intersection areas of COCO [x, y, w, h] boxes with xyxy boxes."""
    a = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
    lt = torch.maximum(a[:, None, :2], xyxy[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], xyxy[None, :, 2:])
    return (rb - lt).clamp(min=0).prod(-1)


class CocoMetric(GatherMetric):
    """mAP@0.5 and mAP@0.5:0.95 (keys map50, map) of a detector's decoded outputs on a DetSource."""

    def __init__(self, source: DetSource, conf: float = 0.001, iou: float = 0.6, max_det: int = 300):
        self.source, self.conf, self.iou, self.max_det = source, conf, iou, max_det
        self.full_gt = self.gt = to_coco_gt(source)
        self.details: dict = {}
        self.results: list[dict] = []
        super().__init__()

    def records(self, preds: dict, batch: dict) -> list[dict]:
        """COCO result dicts of a batch: NMS (multi-label), back to the original pixels, rounded as written."""
        dets = postprocess(preds["decoded"].float(), self.conf, self.iou, max_det=self.max_det, multi_label=True)
        out = []
        for d, m in zip(dets, batch["meta"]):
            out.append({"image_id": int(m["image_id"])})  # scored: its ground truth counts (no "bbox": not a result)
            d = d.detach().cpu()
            b = unletterbox(d[:, :4], m["ratio"], m["pad"], m["orig"])
            for (x1, y1, x2, y2), s, c in zip(b.tolist(), d[:, 4].tolist(), d[:, 5].long().tolist()):
                out.append(
                    {
                        "image_id": int(m["image_id"]),
                        "category_id": self.source.category_ids[c],
                        "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                        "score": round(s, 5),
                    }
                )
        return out

    def evaluate(self, records: list[dict]) -> dict[str, float]:
        scored = {r["image_id"] for r in records}
        self.results = [r for r in records if "bbox" in r]
        self.gt = scored_gt(self.full_gt, scored)
        stats, precision, summary, cat_ids = coco_eval(self.gt, self.results)
        names = dict(zip(self.source.category_ids, self.source.names))
        per_class = []
        if precision is not None:
            for k, cid in enumerate(cat_ids):
                p = precision[:, :, k, 0, -1]  # (iou thresholds, recall points), area all, maxDets 100
                if (p > -1).any():
                    p50 = p[0][p[0] > -1]
                    per_class.append((names[cid], float(p50.mean()), float(p[p > -1].mean())))
        self.details = {
            "summary": summary,
            "per_class": per_class,
            "precision": precision,
            "cat_ids": cat_ids,
            "confusion": self.confusion(self.results, scored),
        }
        return {"map50": float(max(stats[1], 0.0)), "map": float(max(stats[0], 0.0))}

    def confusion(
        self, records: list[dict], scored: set[int] | None = None, conf: float = 0.25, iou: float = 0.45
    ) -> list[list[int]]:
        """(C + 1) x (C + 1) counts, rows true class, columns predicted; the last row/column is background.
        A detection on an ignore region (VOC difficult, COCO crowd) is not counted, as in COCOeval."""
        from torchvision.ops import box_iou

        nc = len(self.source.names)
        index = {cid: i for i, cid in enumerate(self.source.category_ids)}
        cm = np.zeros((nc + 1, nc + 1), np.int64)
        by_image: dict[int, list[dict]] = {}
        for r in records:
            if r["score"] >= conf:
                by_image.setdefault(r["image_id"], []).append(r)
        for rec in self.source.records:
            if scored is not None and rec.image_id not in scored:
                continue
            dets = by_image.get(rec.image_id, [])
            gt_c = rec.classes.tolist()
            det_c = [index[d["category_id"]] for d in dets]
            matched_d = set()
            if dets and len(gt_c):
                db = torch.tensor([d["bbox"] for d in dets], dtype=torch.float32)
                db[:, 2:] += db[:, :2]
                ious = box_iou(torch.from_numpy(rec.boxes).float(), db)
                pairs = (ious > iou).nonzero().tolist()
                pairs.sort(key=lambda p: -float(ious[p[0], p[1]]))
                matched_g = set()
                for g, d in pairs:  # greedy one-to-one by IoU
                    if g not in matched_g and d not in matched_d:
                        matched_g.add(g)
                        matched_d.add(d)
                        cm[gt_c[g], det_c[d]] += 1
                for g in set(range(len(gt_c))) - matched_g:
                    cm[gt_c[g], nc] += 1
            else:
                for c in gt_c:
                    cm[c, nc] += 1
            on_ignored = set()
            if dets and len(rec.ignore_boxes):  # as pycocotools matches crowd regions: overlap / detection area
                db = torch.tensor([d["bbox"] for d in dets], dtype=torch.float32)
                inter = _intersection(db, torch.from_numpy(rec.ignore_boxes).float())
                cover = inter / (db[:, 2] * db[:, 3]).clamp(min=1e-9)[:, None]
                same = torch.tensor(det_c)[:, None] == torch.from_numpy(rec.ignore_classes)[None]  # per class
                on_ignored = set(((cover > iou) & same).any(1).nonzero().flatten().tolist())
            for d in set(range(len(dets))) - matched_d - on_ignored:
                cm[nc, det_c[d]] += 1
        return cm.tolist()

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """predictions.json, ground_truth.json, per_class_ap.csv, pr_curve.png, confusion_matrix.png in out_dir."""
        out_dir = Path(out_dir)
        paths = {
            "predictions": out_dir / "predictions.json",
            "ground_truth": out_dir / "ground_truth.json",
            "per_class": out_dir / "per_class_ap.csv",
            "pr_curve": out_dir / "pr_curve.png",
            "confusion": out_dir / "confusion_matrix.png",
        }
        atomic_write(paths["predictions"], lambda f: json.dump(self.results, f), mode="w")
        atomic_write(paths["ground_truth"], lambda f: json.dump(self.gt, f), mode="w")

        def table(f) -> None:
            w = csv.writer(f)
            w.writerow(["class", "ap50", "ap50_95"])
            w.writerows([n, f"{a:.4f}", f"{b:.4f}"] for n, a, b in self.details.get("per_class", []))

        atomic_write(paths["per_class"], table, mode="w")
        from cspnet.engine.plots import plot_confusion
        from cspnet.engine.tasks.detect_plots import plot_pr_curve

        plot_pr_curve(self.details.get("precision"), self.details.get("cat_ids", []), self.source, paths["pr_curve"])
        names = [*self.source.names, "background"]
        cm = np.asarray(self.details.get("confusion") or [[0] * len(names)] * len(names))
        seen = [i for i in range(len(names)) if cm[i].any() or cm[:, i].any() or i == len(names) - 1]
        plot_confusion(cm[np.ix_(seen, seen)].tolist(), [names[i] for i in seen], paths["confusion"])  # classes seen
        return paths
