"""Detection datasets in three formats, read into one record format: (image path, xyxy pixel boxes, class ids).

`open_detection(data, split)` detects the format from what `data` points at:

- **YOLO txt** (`detection_yolo.py`): a `data.yaml` (or a folder holding one) with `train:`/`val:` image folders or
  list files and `names:`, paths resolved as ultralytics does (Roboflow's `train: ../train/images` included);
  labels are `labels/.../<stem>.txt` beside `images/...`, one `class cx cy w h` (normalised) or polygon per line.
- **COCO JSON** (`detection_formats.py`): an `instances_*.json`. The val split is the sibling JSON with `train`
  replaced by `val` when it exists; otherwise the deterministic split below. Crowd annotations are ignore regions.
- **Pascal VOC XML** (`detection_formats.py`): the devkit layout or any folder of images and `.xml` files.
  `difficult` objects are ignore regions.

A source that names no split (flat VOC folders, a single COCO JSON) is split deterministically: an image is in
`val` when the MD5 of its file stem, as an integer, is divisible by 5 (about 20%); adding or removing images never
moves the others between splits.

Fields that contradict each other (`nc:` against `names:`, a duplicated class name or id, a missing split folder)
are refused in one line (InputError). Bad input within an image is reported through the `cspnet.data` logger with
the file (and line), counted in the split's `summary()`, and handled so that training goes on:

- an image without labels (no label file, empty file, no annotations) is a background image;
- a label file without an image is skipped;
- an unparsable line, a class id outside 0..nc-1, coordinates that are not normalised, or an annotation whose
  recorded image size is not the image's, skips that image (its labels cannot be trusted);
- a box reaching outside the image by more than 1 pixel is clipped to it; a box with no area after clipping is dropped;
- an image whose header cannot be read is skipped here; one that fails to decode later is skipped by the loader.

Images are read as the user saw them when labelling: with the EXIF orientation applied (`detection_records.py`).
"""

from __future__ import annotations

from pathlib import Path

from cspnet.data.detection_formats import open_coco, open_voc_devkit, open_voc_flat
from cspnet.data.detection_records import (
    IMG_SUFFIXES,
    SPLITS,
    DetRecord,
    DetSource,
    Skip,
    check_boxes,
    image_info,
    in_val_split,
)
from cspnet.data.detection_yolo import open_yolo, parse_yolo_labels
from cspnet.errors import InputError

__all__ = [
    "IMG_SUFFIXES",
    "DetRecord",
    "DetSource",
    "Skip",
    "check_boxes",
    "detect_format",
    "image_info",
    "in_val_split",
    "open_detection",
    "parse_yolo_labels",
    "to_coco_gt",
]


# ---- detection of the format ----------------------------------------------------------------------------------------
def detect_format(data: str | Path) -> tuple[str, Path]:
    """('yolo' | 'coco' | 'voc-devkit' | 'voc', path) for a data argument, or an InputError saying what was expected."""
    p = Path(data)
    if not p.exists():
        raise InputError(f"dataset {p} not found; pass a data.yaml, a COCO .json or a Pascal VOC folder")
    if p.is_file():
        if p.suffix in (".yaml", ".yml"):
            return "yolo", p
        if p.suffix == ".json":
            return "coco", p
        raise InputError(f"{p}: expected a YOLO data.yaml, a COCO .json or a Pascal VOC folder")
    if (p / "data.yaml").is_file():
        return "yolo", p / "data.yaml"
    if (p / "Annotations").is_dir() and (p / "JPEGImages").is_dir():
        return "voc-devkit", p
    if next(p.rglob("*.xml"), None) is not None:
        return "voc", p
    yamls = sorted(p.glob("*.y*ml"))
    if len(yamls) == 1:
        return "yolo", yamls[0]
    jsons = sorted(p.glob("*.json")) + sorted(p.glob("annotations/*.json"))
    if len(jsons) == 1:
        return "coco", jsons[0]
    raise InputError(
        f"{p}: no data.yaml, COCO .json, VOC devkit (Annotations/, JPEGImages/) or .xml files found; "
        "pass one of those (for COCO or several yaml files, the file itself)"
    )


def open_detection(data: str | Path, split: str = "train") -> DetSource:
    """The records of one split of a detection dataset in any of the three formats (see the module docstring)."""
    fmt, path = detect_format(data)
    if fmt == "yolo":
        src = open_yolo(path, split)
    elif fmt == "voc-devkit":
        src = open_voc_devkit(path, split)
    elif fmt == "voc":
        src = open_voc_flat(path, split if split in SPLITS else None)
    else:
        src = open_coco(*coco_split(path, split))
    if not src.records:
        raise InputError(f"no usable images in {src.where}; see the warnings above for what was skipped")
    return src


def coco_split(json_path: Path, split: str) -> tuple[Path, str | None]:
    """COCO: a sibling `*val*` JSON is the val split; without one, the deterministic split of the one file."""
    sibling = json_path.with_name(json_path.name.replace("train", "val"))
    if "val" in json_path.name and "train" not in json_path.name:
        return json_path, None  # a val JSON is used whole
    if "train" in json_path.name and sibling.is_file():
        return (sibling if split == "val" else json_path), None
    return json_path, split if split in SPLITS else None


def to_coco_gt(src: DetSource) -> dict:
    """The ground truth of a source as COCO JSON (images with ids, file names and sizes; categories; boxes).

    Ignore regions (VOC difficult, COCO crowd) are written with `iscrowd: 1`, the flag pycocotools honours: a
    detection that matches one is neither a true nor a false positive, and missing it costs nothing. (Its `ignore`
    key is overwritten from iscrowd, so it would not do.) pycocotools matches a crowd region by the intersection
    over the detection's area, a little more lenient than the VOC devkit's IoU for difficult objects.
    """
    images, anns = [], []
    for r in sorted(src.records, key=lambda r: r.image_id):
        images.append({"id": r.image_id, "file_name": Path(r.path).name, "width": r.width, "height": r.height})
        for boxes, classes, crowd in ((r.boxes, r.classes, 0), (r.ignore_boxes, r.ignore_classes, 1)):
            for b, c in zip(boxes.tolist(), classes.tolist()):
                w, h = b[2] - b[0], b[3] - b[1]
                anns.append(
                    {
                        "id": len(anns) + 1,
                        "image_id": r.image_id,
                        "category_id": src.category_ids[c],
                        "bbox": [round(v, 3) for v in (b[0], b[1], w, h)],
                        "area": round(w * h, 3),
                        "iscrowd": crowd,
                    }
                )
    cats = [{"id": i, "name": n} for i, n in zip(src.category_ids, src.names)]
    return {"images": images, "annotations": anns, "categories": cats}
