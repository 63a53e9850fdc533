"""Detection datasets in three formats, read into one record format: (image path, xyxy pixel boxes, class ids).

`open_detection(data, split)` detects the format from what `data` points at:

- **YOLO txt**: a `data.yaml` (or a folder holding one) with `train:`/`val:` image folders or list files and
  `names:`; labels are `labels/.../<stem>.txt` beside `images/...`, one `class cx cy w h` (normalised) per line.
- **COCO JSON**: an `instances_*.json`; images resolve relative to it (beside it, `../images/<split>/`, `../<split>/`
  or `../images/`). The val split is the sibling JSON with `train` replaced by `val` when it exists; otherwise the
  deterministic split below. Crowd annotations (`iscrowd: 1`) are not used.
- **Pascal VOC XML**: the devkit layout (`JPEGImages/`, `Annotations/`, `ImageSets/Main/<split>.txt`), or any folder
  of images and `.xml` files (matched by file stem). Classes are the sorted object names of all XMLs. VOC's 1-based
  inclusive corners become 0-based: (xmin - 1, ymin - 1, xmax, ymax). `difficult` objects are kept.

A source that names no split (flat VOC folders, a single COCO JSON) is split deterministically: an image is in
`val` when the MD5 of its file stem, as an integer, is divisible by 5 (about 20%); adding or removing images never
moves the others between splits.

Bad input, reported through the `cspnet.data` logger with the file (and line) and handled so that training goes on:

- an image without labels (no label file, empty file, no annotations) is a background image;
- a label file without an image is skipped;
- an unparsable line or an out-of-range class id skips that image (its labels cannot be trusted);
- a box reaching outside the image by more than 1 pixel is clipped to it; a box with no area after clipping is dropped;
- an image whose header cannot be read is skipped here; one that fails to decode later is skipped by the loader.
"""

from __future__ import annotations

import hashlib
import json
import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from cspnet.errors import InputError

LOG = logging.getLogger("cspnet.data")

IMG_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
SPLITS = ("train", "val")
TOLERANCE = 1.0  # pixels a box may reach outside its image before the clip is reported


@dataclass
class DetRecord:
    """One image: its file, size, boxes (N, 4) xyxy in pixels and class ids (N,)."""

    path: str
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    classes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    image_id: int | None = None  # COCO image id when the data came with one


@dataclass
class DetSource:
    """The records of one split with the class names; `category_ids[i]` is class i's id in COCO JSON."""

    records: list[DetRecord]
    names: list[str]
    where: str
    format: str
    category_ids: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.category_ids:
            self.category_ids = list(range(1, len(self.names) + 1))
        ids = [r.image_id for r in self.records]
        if any(i is None for i in ids) or len(set(ids)) != len(ids):  # ids in sorted-path order, from 1
            for i, r in enumerate(sorted(self.records, key=lambda r: r.path)):
                r.image_id = i + 1


def in_val_split(stem: str) -> bool:
    """The documented deterministic split: MD5(stem) divisible by 5 means val (about 20%)."""
    return int(hashlib.md5(stem.encode()).hexdigest(), 16) % 5 == 0


def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the image header, or None (warned) when it cannot be read."""
    try:
        with Image.open(path) as im:
            return im.size
    except Exception as e:  # PIL raises many types for bad files
        LOG.warning(f"skipping unreadable image {path}: {type(e).__name__}: {e}")
        return None


def check_boxes(
    boxes: np.ndarray, classes: np.ndarray, w: int, h: int, where: str, lines: list[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Clip boxes to the image (reported past TOLERANCE px), drop those without area (reported)."""
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
    return clipped[keep], classes[keep].astype(np.int64)


# ---- YOLO txt -------------------------------------------------------------------------------------------------------
def _label_path(img: Path) -> Path:
    """images/.../x.jpg -> labels/.../x.txt (the last `images` folder in the path)."""
    parts = list(img.parts)
    i = len(parts) - 1 - parts[::-1].index("images") if "images" in parts else None
    if i is None:
        return img.with_suffix(".txt")
    return Path(*parts[:i], "labels", *parts[i + 1 :]).with_suffix(".txt")


def _yolo_images(root: Path, entry: str | list, where: str) -> list[Path]:
    entries = entry if isinstance(entry, list) else [entry]
    out: list[Path] = []
    for e in entries:
        p = (root / str(e)).resolve() if not Path(str(e)).is_absolute() else Path(str(e))
        if p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.suffix.lower() in IMG_SUFFIXES)
        elif p.suffix == ".txt" and p.is_file():
            lines = [ln.strip() for ln in p.read_text().splitlines() if ln.strip()]
            out += [(p.parent / ln).resolve() if not Path(ln).is_absolute() else Path(ln) for ln in lines]
        else:
            raise InputError(f"{where}: {p} is neither an image folder nor a .txt list of images; fix the yaml")
    return out


def parse_yolo_labels(path: Path, w: int, h: int, nc: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Boxes and classes of one YOLO label file; None (warned) when a line is unparsable or a class is out of range."""
    boxes, classes, lines = [], [], []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            c, cx, cy, bw, bh = (float(v) for v in parts)
            if not np.isfinite([c, cx, cy, bw, bh]).all():
                raise ValueError("not finite")
        except ValueError:
            LOG.warning(f"{path}:{n}: cannot parse {line.strip()!r} (expected 'class cx cy w h'); image skipped")
            return None
        if c != int(c) or not 0 <= c < nc:
            LOG.warning(f"{path}:{n}: class id {parts[0]} is outside 0..{nc - 1}; image skipped")
            return None
        boxes.append([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h])
        classes.append(int(c))
        lines.append(n)
    return check_boxes(np.array(boxes).reshape(-1, 4), np.array(classes, np.int64), w, h, str(path), lines)


def _yolo_names(cfg: dict, where: str) -> list[str]:
    names = cfg.get("names")
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names, key=int)]
    if not names and cfg.get("nc"):
        names = [f"class{i}" for i in range(int(cfg["nc"]))]
    if not names:
        raise InputError(f"{where} has no 'names:' (or 'nc:'); list the class names")
    return [str(n) for n in names]


def open_yolo(yaml_path: Path, split: str) -> DetSource:
    try:
        cfg = yaml.safe_load(yaml_path.read_text()) or {}
    except yaml.YAMLError as e:
        raise InputError(f"cannot parse {yaml_path} as YAML ({e})") from None
    names = _yolo_names(cfg, str(yaml_path))
    if split not in cfg:
        raise InputError(f"{yaml_path} has no {split!r} entry; add '{split}: images/{split}' (found {list(cfg)})")
    root = yaml_path.parent / str(cfg.get("path") or ".")
    images = _yolo_images(root, cfg[split], str(yaml_path))
    records = []
    for img in images:
        size = image_size(img)
        if size is None:
            continue
        rec = DetRecord(str(img), *size)
        lbl = _label_path(img)
        if lbl.is_file():
            parsed = parse_yolo_labels(lbl, rec.width, rec.height, len(names))
            if parsed is None:
                continue
            rec.boxes, rec.classes = parsed
        records.append(rec)
    # label files without an image (in split folders; a .txt image list names its own images): reported, skipped
    have = {_label_path(p) for p in images}
    entries = cfg[split] if isinstance(cfg[split], list) else [cfg[split]]
    for e in entries:
        d = (root / str(e)).resolve()
        labels = _label_path(d / "x.jpg").parent
        if d.is_dir() and labels != d and labels.is_dir():
            for lbl in sorted(labels.rglob("*.txt")):
                if lbl not in have:
                    LOG.warning(f"{lbl}: label file without an image (no {lbl.stem}.* in {d}); skipped")
    return DetSource(records, names, f"{yaml_path}:{split}", "yolo")


# ---- COCO JSON ------------------------------------------------------------------------------------------------------
def _coco_image_dirs(json_path: Path) -> list[Path]:
    base = json_path.parent
    split = json_path.stem.split("_", 1)[-1]  # instances_train2017 -> train2017
    return [base, base.parent / "images" / split, base.parent / split, base.parent / "images", base.parent]


def open_coco(json_path: Path, split: str | None) -> DetSource:
    """One COCO JSON; split None keeps every image, train/val apply the deterministic split."""
    try:
        d = json.loads(json_path.read_text())
        images, anns, cats = d["images"], d.get("annotations", []), d["categories"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise InputError(f"{json_path} is not COCO JSON with images and categories ({type(e).__name__}: {e})") from None
    cats = sorted(cats, key=lambda c: c["id"])
    cat_index = {c["id"]: i for i, c in enumerate(cats)}
    dirs = _coco_image_dirs(json_path)
    by_image: dict[int, list[dict]] = {}
    known = {im["id"] for im in images}
    for a in anns:
        if a.get("image_id") not in known:
            LOG.warning(f"{json_path}: annotation {a.get('id')} refers to unknown image {a.get('image_id')}; skipped")
            continue
        by_image.setdefault(a["image_id"], []).append(a)
    records = []
    for im in images:
        if split is not None and in_val_split(Path(im["file_name"]).stem) != (split == "val"):
            continue
        path = next((p / im["file_name"] for p in dirs if (p / im["file_name"]).is_file()), None)
        if path is None:
            LOG.warning(f"{json_path}: image {im['file_name']} (id {im['id']}) not found beside it; skipped")
            continue
        w, h = int(im.get("width") or 0), int(im.get("height") or 0)
        if not (w and h):
            size = image_size(path)
            if size is None:
                continue
            w, h = size
        ok = [a for a in by_image.get(im["id"], []) if not a.get("iscrowd", 0)]
        bad = [a for a in ok if a.get("category_id") not in cat_index or len(a.get("bbox", [])) != 4]
        if bad:
            LOG.warning(
                f"{json_path}: annotation {bad[0].get('id')} of {im['file_name']} has an unknown category "
                f"{bad[0].get('category_id')} or a bbox that is not [x, y, w, h]; image skipped"
            )
            continue
        xywh = np.array([a["bbox"] for a in ok], np.float32).reshape(-1, 4)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
        classes = np.array([cat_index[a["category_id"]] for a in ok], np.int64)
        boxes, classes = check_boxes(boxes, classes, w, h, f"{json_path} ({im['file_name']})")
        records.append(DetRecord(str(path), w, h, boxes, classes, image_id=int(im["id"])))
    names = [str(c["name"]) for c in cats]
    where = f"{json_path}" + (f":{split}" if split else "")
    return DetSource(records, names, where, "coco", [int(c["id"]) for c in cats])


# ---- Pascal VOC XML -------------------------------------------------------------------------------------------------
def parse_voc_xml(path: Path) -> tuple[list[str], np.ndarray, tuple[int, int] | None] | None:
    """Object names, boxes (0-based xyxy) and the <size> (w, h) of one VOC XML; None (warned) when unparsable."""
    try:
        root = ET.parse(path).getroot()
        names, boxes = [], []
        for obj in root.iter("object"):
            bb = obj.find("bndbox")
            names.append(obj.findtext("name", "").strip())
            x1, y1, x2, y2 = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            boxes.append([x1 - 1, y1 - 1, x2, y2])
        size = root.find("size")
        wh = (int(float(size.findtext("width"))), int(float(size.findtext("height")))) if size is not None else None
    except (ET.ParseError, AttributeError, TypeError, ValueError) as e:
        LOG.warning(f"{path}: cannot parse as Pascal VOC XML ({type(e).__name__}: {e}); image skipped")
        return None
    return names, np.array(boxes, np.float32).reshape(-1, 4), wh if wh and all(wh) else None


def _voc_records(pairs: list[tuple[Path, Path | None]], names: list[str]) -> list[DetRecord]:
    index = {n: i for i, n in enumerate(names)}
    records = []
    for img, xml in pairs:
        size = image_size(img)
        if size is None:
            continue
        rec = DetRecord(str(img), *size)
        if xml is not None:
            parsed = parse_voc_xml(xml)
            if parsed is None:
                continue
            objs, boxes, _ = parsed
            unknown = [n for n in objs if n not in index]
            if unknown:
                LOG.warning(f"{xml}: object name {unknown[0]!r} is not one of the classes; image skipped")
                continue
            rec.boxes, rec.classes = check_boxes(boxes, np.array([index[n] for n in objs]), *size, str(xml))
        records.append(rec)
    return records


def _voc_names(xmls: list[Path]) -> list[str]:
    names = set()
    for x in xmls:
        parsed = parse_voc_xml(x)
        if parsed:
            names.update(n for n in parsed[0] if n)
    return sorted(names)


def open_voc_devkit(root: Path, split: str) -> DetSource:
    lst = root / "ImageSets" / "Main" / f"{split}.txt"
    if not lst.is_file():
        have = sorted(p.stem for p in (root / "ImageSets" / "Main").glob("*.txt") if "_" not in p.stem)
        raise InputError(f"{lst} not found (splits here: {', '.join(have) or 'none'}); pass --split NAME")
    names = _voc_names(sorted((root / "Annotations").glob("*.xml")))
    pairs = []
    for stem in (ln.split()[0] for ln in lst.read_text().splitlines() if ln.strip()):
        img = next((p for s in IMG_SUFFIXES if (p := root / "JPEGImages" / f"{stem}{s}").is_file()), None)
        xml = root / "Annotations" / f"{stem}.xml"
        if img is None:
            LOG.warning(f"{lst}: {stem} has no image in {root / 'JPEGImages'}; skipped")
            continue
        pairs.append((img, xml if xml.is_file() else None))
    return DetSource(_voc_records(pairs, names), names, f"{root}:{split}", "voc")


def open_voc_flat(root: Path, split: str | None) -> DetSource:
    """Images and XMLs anywhere under root, matched by stem; split by the deterministic rule (None: all)."""
    xmls = sorted(root.rglob("*.xml"))
    images = {p.stem: p for p in sorted(root.rglob("*")) if p.suffix.lower() in IMG_SUFFIXES}
    names = _voc_names(xmls)
    by_stem = {x.stem: x for x in xmls}
    for stem, x in by_stem.items():
        if stem not in images:
            LOG.warning(f"{x}: annotation without an image (no {stem}.* under {root}); skipped")
    pairs = [(img, by_stem.get(stem)) for stem, img in sorted(images.items())]
    if split is not None:
        pairs = [p for p in pairs if in_val_split(p[0].stem) == (split == "val")]
    return DetSource(_voc_records(pairs, names), names, f"{root}" + (f":{split}" if split else ""), "voc")


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
    """The ground truth of a source as COCO JSON (images with ids, file names and sizes; categories; boxes)."""
    images, anns = [], []
    for r in sorted(src.records, key=lambda r: r.image_id):
        images.append({"id": r.image_id, "file_name": Path(r.path).name, "width": r.width, "height": r.height})
        for b, c in zip(r.boxes.tolist(), r.classes.tolist()):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": r.image_id,
                    "category_id": src.category_ids[c],
                    "bbox": [round(v, 3) for v in (b[0], b[1], w, h)],
                    "area": round(w * h, 3),
                    "iscrowd": 0,
                }
            )
    cats = [{"id": i, "name": n} for i, n in zip(src.category_ids, src.names)]
    return {"images": images, "annotations": anns, "categories": cats}
