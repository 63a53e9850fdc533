"""What every detection format is read into: records, the source of one split, and the checks they share.

A record holds the image as the user saw it when labelling: its size is the displayed size (the EXIF orientation
applied, as photo viewers and ultralytics do) unless the annotation recorded the stored size (a tool that ignored
the EXIF tag), in which case the record says to read the stored pixels (`exif=False`). Objects a protocol ignores
(VOC `difficult`, COCO `iscrowd`) are kept apart in `ignore_boxes`: never training targets, written as
`iscrowd: 1` regions in the COCO ground truth so that pycocotools neither rewards nor penalises detections of them.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

LOG = logging.getLogger("cspnet.data")

IMG_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
SPLITS = ("train", "val")
TOLERANCE = 1.0  # pixels a box may reach outside its image before the clip is reported
ORIENTATION = 0x0112  # the EXIF orientation tag; 5..8 turn the image by 90 degrees


def _boxes() -> np.ndarray:
    return np.zeros((0, 4), np.float32)


def _classes() -> np.ndarray:
    return np.zeros(0, np.int64)


@dataclass
class DetRecord:
    """One image: its file, size, boxes (N, 4) xyxy in pixels and class ids (N,).

    ignore_boxes / ignore_classes: objects the protocol ignores (VOC difficult, COCO crowd); exif: read the image
    with its EXIF orientation applied (the size above is then the displayed one).
    """

    path: str
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=_boxes)
    classes: np.ndarray = field(default_factory=_classes)
    image_id: int | None = None  # COCO image id when the data came with one
    ignore_boxes: np.ndarray = field(default_factory=_boxes)
    ignore_classes: np.ndarray = field(default_factory=_classes)
    exif: bool = True


@dataclass
class DetSource:
    """The records of one split with the class names; `category_ids[i]` is class i's id in COCO JSON.

    skipped: images left out, by reason; notes: what was changed or set aside on the way (boxes clipped, dropped...).
    """

    records: list[DetRecord]
    names: list[str]
    where: str
    format: str
    category_ids: list[int] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        if not self.category_ids:
            self.category_ids = list(range(1, len(self.names) + 1))
        ids = [r.image_id for r in self.records]
        if any(i is None for i in ids) or len(set(ids)) != len(ids):  # ids in sorted-path order, from 1
            for i, r in enumerate(sorted(self.records, key=lambda r: r.path)):
                r.image_id = i + 1

    def summary(self, split: str) -> str:
        """One line: images, boxes, classes, what the protocol ignores, and what was skipped and why."""
        n, skipped = len(self.records), sum(self.skipped.values())
        boxes = sum(len(r.boxes) for r in self.records)
        present = len({int(c) for r in self.records for c in r.classes})
        images = f"{n} of {n + skipped} images" if skipped else f"{n} images"
        line = f"{split}: {images}, {_n(boxes, 'box', 'boxes')}, {_n(len(self.names), 'class', 'classes')}"
        if present < len(self.names):
            line += f" ({len(self.names) - present} without boxes here)"
        ignored = sum(len(r.ignore_boxes) for r in self.records)
        if ignored:
            line += f", {ignored} {'crowd' if self.format == 'coco' else 'difficult'} boxes ignored"
        if skipped:
            line += f"; {skipped} skipped ({_counts(self.skipped)})"
        if self.notes:
            line += f"; {_counts(self.notes)}"
        return line


def _n(k: int, one: str, many: str) -> str:
    return f"{k} {one if k == 1 else many}"


def _counts(c: Counter) -> str:
    """'2 x, 1 y': most frequent first, then alphabetical (the same line for the same data)."""
    return ", ".join(f"{v} {k}" for k, v in sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))


class Skip(Exception):
    """An image left out: the message (file and line) goes to the log, `reason` into the split's summary."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason

    def count(self, skipped: Counter) -> None:
        LOG.warning(str(self))
        skipped[self.reason] += 1


def in_val_split(stem: str) -> bool:
    """The documented deterministic split: MD5(stem) divisible by 5 means val (about 20%)."""
    return int(hashlib.md5(stem.encode()).hexdigest(), 16) % 5 == 0


@dataclass
class ImageInfo:
    """An image's size as displayed (EXIF orientation applied), its stored size and the orientation tag."""

    width: int
    height: int
    stored: tuple[int, int]
    orientation: int


def image_info(path: Path) -> ImageInfo:
    """The header of an image; Skip when it is missing or cannot be read."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            try:
                orientation = int(im.getexif().get(ORIENTATION, 1) or 1)
            except Exception:  # a broken EXIF block: the pixels are still readable, shown as stored
                orientation = 1
    except FileNotFoundError:
        raise Skip("missing image", f"image {path} not found; skipped") from None
    except Exception as e:  # PIL raises many types for bad files
        raise Skip("corrupt image", f"skipping unreadable image {path}: {type(e).__name__}: {e}") from None
    shown = (h, w) if orientation in (5, 6, 7, 8) else (w, h)
    return ImageInfo(*shown, (w, h), orientation)


def settle_size(rec: DetRecord, info: ImageInfo, recorded: tuple[int, int] | None, where: str, notes: Counter) -> None:
    """Match the size an annotation recorded against the image, so the record follows what the labelling tool
    showed: the displayed pixels, or the stored ones when the tool ignored the EXIF orientation. Skip otherwise."""
    if not recorded or not all(recorded) or recorded == (info.width, info.height):
        return
    if recorded == info.stored:  # the tool ignored the EXIF orientation: its boxes are on the stored pixels
        rec.width, rec.height = info.stored
        rec.exif = False
        LOG.warning(
            f"{where}: labelled on the stored {recorded[0]}x{recorded[1]} pixels: EXIF orientation "
            f"{info.orientation} is not applied to {Path(rec.path).name}"
        )
        notes["images labelled without their EXIF rotation"] += 1
        return
    raise Skip(
        "annotation size differs from the image",
        f"{where}: records a {recorded[0]}x{recorded[1]} image, {Path(rec.path).name} is {info.width}x{info.height}; "
        "the boxes cannot be placed (re-export the annotation for this image); image skipped",
    )


def check_boxes(
    boxes: np.ndarray,
    classes: np.ndarray,
    w: int,
    h: int,
    where: str,
    lines: list[int] | None = None,
    notes: Counter | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Clip boxes to the image (reported past TOLERANCE px), drop those without area (reported, counted)."""
    boxes = boxes.astype(np.float32).reshape(-1, 4)
    out = (boxes[:, :2] < -TOLERANCE).any(1) | (boxes[:, 2] > w + TOLERANCE) | (boxes[:, 3] > h + TOLERANCE)
    clipped = boxes.copy()
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, w)
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, h)
    keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    for i in np.flatnonzero(out | ~keep):
        at = f"{where}:{lines[i]}" if lines else f"{where} (box {i + 1})"
        what = "has no area, dropped" if not keep[i] else f"reaches outside the {w}x{h} image, clipped"
        LOG.warning(f"{at}: box {boxes[i].round(1).tolist()} {what}")
        if notes is not None:
            notes["boxes without area dropped" if not keep[i] else "boxes clipped to the image"] += 1
    return clipped[keep], classes[keep].astype(np.int64)
