"""COCO JSON and Pascal VOC XML datasets, read into detection records.

COCO: images resolve relative to the JSON (beside it, `../images/<split>/`, `../<split>/` or `../images/`). Crowd
annotations (`iscrowd: 1`) are kept as ignore regions, as COCO's own evaluation treats them. Duplicate image or
category ids and duplicate category names are refused; the JSON's width/height must be the image's.

VOC: the devkit layout (`JPEGImages/`, `Annotations/`, `ImageSets/Main/<split>.txt`), or any folder of images and
`.xml` files (matched by file stem). Classes are the sorted object names of all XMLs. VOC's 1-based inclusive corners
become 0-based: (xmin - 1, ymin - 1, xmax, ymax). `<difficult>1</difficult>` objects are ignore regions (the VOC
protocol neither rewards nor penalises detecting them). The XML's `<size>` must be the image's.

Where an annotation records a size, it says what the labelling tool showed: the displayed image (EXIF orientation
applied), or the stored pixels when the tool ignored the orientation; the record follows it (`settle_size`).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import numpy as np

from cspnet.data.detection_records import (
    IMG_SUFFIXES,
    LOG,
    DetRecord,
    DetSource,
    Skip,
    check_boxes,
    image_info,
    in_val_split,
    settle_size,
)
from cspnet.errors import InputError


def _split_ignored(rec: DetRecord, boxes, classes, ignore: np.ndarray, where: str, notes: Counter) -> None:
    """Targets and ignore regions of one image, each clipped to it."""
    rec.boxes, rec.classes = check_boxes(boxes[~ignore], classes[~ignore], rec.width, rec.height, where, notes=notes)
    rec.ignore_boxes, rec.ignore_classes = check_boxes(boxes[ignore], classes[ignore], rec.width, rec.height, where)


def _unique(values: list, what: str, where: str) -> None:
    dup = next((v for v, k in Counter(values).items() if k > 1), None)
    if dup is not None:
        raise InputError(f"{where}: {what} {dup!r} appears {values.count(dup)} times; each must be unique")


# ---- COCO JSON ------------------------------------------------------------------------------------------------------
def _coco_image_dirs(json_path: Path) -> list[Path]:
    base = json_path.parent
    split = json_path.stem.split("_", 1)[-1]  # instances_train2017 -> train2017
    return [base, base.parent / "images" / split, base.parent / split, base.parent / "images", base.parent]


def _coco_boxes(anns: list[dict], cat_index: dict, file_name: str, where: Path) -> tuple[np.ndarray, np.ndarray]:
    bad = [a for a in anns if a.get("category_id") not in cat_index or len(a.get("bbox") or []) != 4]
    if bad:
        raise Skip(
            "annotation with an unknown category or a bad bbox",
            f"{where}: annotation {bad[0].get('id')} of {file_name} has an unknown category "
            f"{bad[0].get('category_id')} or a bbox that is not [x, y, w, h]; image skipped",
        )
    xywh = np.array([a["bbox"] for a in anns], np.float32).reshape(-1, 4)
    boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
    return boxes, np.array([cat_index[a["category_id"]] for a in anns], np.int64)


def open_coco(json_path: Path, split: str | None) -> DetSource:
    """One COCO JSON; split None keeps every image, train/val apply the deterministic split."""
    try:
        d = json.loads(json_path.read_text())
        images, anns, cats = d["images"], d.get("annotations", []), d["categories"]
        _unique([c["id"] for c in cats], "category id", str(json_path))
        _unique([str(c["name"]) for c in cats], "category name", str(json_path))
        _unique([im["id"] for im in images], "image id", str(json_path))
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise InputError(f"{json_path} is not COCO JSON with images and categories ({type(e).__name__}: {e})") from None
    cats = sorted(cats, key=lambda c: c["id"])
    cat_index = {c["id"]: i for i, c in enumerate(cats)}
    dirs = _coco_image_dirs(json_path)
    by_image: dict[int, list[dict]] = {}
    known = {im["id"] for im in images}
    skipped, notes = Counter(), Counter()
    for a in anns:
        if a.get("image_id") not in known:
            LOG.warning(f"{json_path}: annotation {a.get('id')} refers to unknown image {a.get('image_id')}; skipped")
            notes["annotations of unknown images"] += 1
            continue
        by_image.setdefault(a["image_id"], []).append(a)
    records = []
    for im in images:
        name = str(im.get("file_name", ""))
        if split is not None and in_val_split(Path(name).stem) != (split == "val"):
            continue
        try:
            path = next((p / name for p in dirs if name and (p / name).is_file()), None)
            if path is None:
                raise Skip("missing image", f"{json_path}: image {name} (id {im['id']}) not found beside it; skipped")
            info = image_info(path)
            rec = DetRecord(str(path), info.width, info.height, image_id=int(im["id"]))
            recorded = (int(im.get("width") or 0), int(im.get("height") or 0))
            settle_size(rec, info, recorded, f"{json_path} ({name})", notes)
            ann = by_image.get(im["id"], [])
            boxes, classes = _coco_boxes(ann, cat_index, name, json_path)
            crowd = np.array([bool(a.get("iscrowd", 0)) for a in ann], bool)
            _split_ignored(rec, boxes, classes, crowd, f"{json_path} ({name})", notes)
        except Skip as e:
            e.count(skipped)
            continue
        records.append(rec)
    names = [str(c["name"]) for c in cats]
    where = f"{json_path}" + (f":{split}" if split else "")
    return DetSource(records, names, where, "coco", [int(c["id"]) for c in cats], skipped, notes)


# ---- Pascal VOC XML -------------------------------------------------------------------------------------------------
def parse_voc_xml(path: Path) -> tuple[list[str], np.ndarray, np.ndarray, tuple[int, int] | None]:
    """Object names, boxes (0-based xyxy), difficult flags and the <size> (w, h) of one VOC XML; Skip if unparsable."""
    try:
        root = ET.parse(path).getroot()
        names, boxes, difficult = [], [], []
        for obj in root.iter("object"):
            bb = obj.find("bndbox")
            names.append(obj.findtext("name", "").strip())
            x1, y1, x2, y2 = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            boxes.append([x1 - 1, y1 - 1, x2, y2])
            difficult.append(bool(int(float(obj.findtext("difficult") or 0))))
        size = root.find("size")
        wh = (int(float(size.findtext("width"))), int(float(size.findtext("height")))) if size is not None else None
    except (ET.ParseError, AttributeError, TypeError, ValueError) as e:
        msg = f"{path}: cannot parse as Pascal VOC XML ({type(e).__name__}: {e}); image skipped"
        raise Skip("unparsable annotation", msg) from None
    return names, np.array(boxes, np.float32).reshape(-1, 4), np.array(difficult, bool), wh


def _voc_source(pairs: list[tuple[Path, Path | None]], names: list[str], where: str) -> DetSource:
    index = {n: i for i, n in enumerate(names)}
    records, skipped, notes = [], Counter(), Counter()
    for img, xml in pairs:
        try:
            info = image_info(img)
            rec = DetRecord(str(img), info.width, info.height)
            if xml is not None:
                objs, boxes, difficult, size = parse_voc_xml(xml)
                if "" in objs:
                    raise Skip("object without a name", f"{xml}: an <object> has no <name>; image skipped")
                settle_size(rec, info, size, str(xml), notes)
                _split_ignored(rec, boxes, np.array([index[n] for n in objs]), difficult, str(xml), notes)
        except Skip as e:
            e.count(skipped)
            continue
        records.append(rec)
    return DetSource(records, names, where, "voc", skipped=skipped, notes=notes)


def _voc_names(xmls: list[Path]) -> list[str]:
    names = set()
    for x in xmls:
        try:
            names.update(n for n in parse_voc_xml(x)[0] if n)
        except Skip:  # reported when its image is read
            pass
    return sorted(names)


def open_voc_devkit(root: Path, split: str) -> DetSource:
    lst = root / "ImageSets" / "Main" / f"{split}.txt"
    if not lst.is_file():
        have = sorted(p.stem for p in (root / "ImageSets" / "Main").glob("*.txt") if "_" not in p.stem)
        raise InputError(f"{lst} not found (splits here: {', '.join(have) or 'none'}); pass --split NAME")
    names = _voc_names(sorted((root / "Annotations").glob("*.xml")))
    pairs, missing = [], 0
    for stem in (ln.split()[0] for ln in lst.read_text().splitlines() if ln.strip()):
        img = next((p for s in IMG_SUFFIXES if (p := root / "JPEGImages" / f"{stem}{s}").is_file()), None)
        xml = root / "Annotations" / f"{stem}.xml"
        if img is None:
            LOG.warning(f"{lst}: {stem} has no image in {root / 'JPEGImages'}; skipped")
            missing += 1
            continue
        pairs.append((img, xml if xml.is_file() else None))
    src = _voc_source(pairs, names, f"{root}:{split}")
    if missing:
        src.skipped["missing image"] += missing
    return src


def open_voc_flat(root: Path, split: str | None) -> DetSource:
    """Images and XMLs anywhere under root, matched by stem; split by the deterministic rule (None: all)."""
    xmls = sorted(root.rglob("*.xml"))
    images = {p.stem: p for p in sorted(root.rglob("*")) if p.suffix.lower() in IMG_SUFFIXES}
    names = _voc_names(xmls)
    by_stem = {x.stem: x for x in xmls}
    orphans = [x for stem, x in by_stem.items() if stem not in images]
    for x in orphans:
        LOG.warning(f"{x}: annotation without an image (no {x.stem}.* under {root}); skipped")
    pairs = [(img, by_stem.get(stem)) for stem, img in sorted(images.items())]
    if split is not None:
        pairs = [p for p in pairs if in_val_split(p[0].stem) == (split == "val")]
    src = _voc_source(pairs, names, f"{root}" + (f":{split}" if split else ""))
    if orphans:
        src.notes["annotations without an image"] += len(orphans)
    return src
