"""YOLO txt datasets, with paths resolved as ultralytics' `check_det_dataset` resolves them.

- The root is `path:` when given, else the yaml's folder. A relative `path:` is tried against the yaml's folder,
  then the working directory (ultralytics uses only the working directory, then its settings' datasets_dir; the
  yaml's folder comes first here so that `path: .` means the dataset wherever the command runs).
- A split (`train:`, `val:`, or `validation:` for val, `test:`...) is a folder (searched recursively), a .txt list of
  images, or a list of these, relative to the root. A string that starts with `../` and does not exist is retried
  without it: export tools (Roboflow) write `train: ../train/images` into a data.yaml at the dataset root.
- In a .txt list, `./x` is relative to the list's folder (ultralytics); other relative lines are tried there, then
  against the working directory.
- `names:` is a list or a {id: name} mapping of ids 0..n-1; `nc:`, when given, must equal its length; names must be
  unique. Without names, `nc:` classes are called class_0, class_1, ...
- Labels: the image path with its last `images` folder replaced by `labels` and the suffix by .txt. A row is
  `class cx cy w h` or a polygon `class x1 y1 x2 y2 ...` (at least 3 points), read as its enclosing box as
  ultralytics does (here row by row, so boxes and polygons may share a file). Coordinates are fractions of the
  image's displayed size (EXIF orientation applied); beyond 0..1 by more than 0.01 they are refused (pixel
  coordinates in a YOLO file), as ultralytics does. Repeated rows are removed (reported).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import yaml

from cspnet.data.detection_records import (
    IMG_SUFFIXES,
    LOG,
    DetRecord,
    DetSource,
    Skip,
    check_boxes,
    image_info,
)
from cspnet.errors import InputError

NORM_TOL = 0.01  # how far past 0..1 a normalised coordinate may go (ultralytics' tolerance)


def read_yaml(path: Path) -> dict:
    try:
        cfg = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise InputError(f"cannot parse {path} as YAML ({e})") from None
    if not isinstance(cfg, dict):
        raise InputError(f"{path} is not a data.yaml (a mapping with train:, val:, names:); fix the file")
    return cfg


def yolo_names(cfg: dict, where: str) -> list[str]:
    """The class names, checked against `nc:` and each other."""
    names, nc = cfg.get("names"), cfg.get("nc")
    if names is None and nc is None:
        raise InputError(f"{where} has neither 'names:' nor 'nc:'; list the class names")
    if nc is not None and (isinstance(nc, bool) or not isinstance(nc, int) or nc < 1):
        raise InputError(f"{where}: nc: {nc!r} is not a positive whole number; set it to the number of classes")
    if isinstance(names, dict):
        try:
            by_id = {int(k): v for k, v in names.items()}
        except (TypeError, ValueError):
            raise InputError(f"{where}: names: keys must be class ids 0, 1, ... (got {list(names)[:3]})") from None
        if sorted(by_id) != list(range(len(by_id))):
            gaps = sorted(set(range(max(by_id, default=-1) + 1)) - set(by_id)) or sorted(by_id)[:1]
            raise InputError(f"{where}: names: ids must run 0..{len(by_id) - 1} without gaps (check id {gaps[0]})")
        names = [by_id[i] for i in range(len(by_id))]
    elif names is not None and not isinstance(names, list):
        raise InputError(f"{where}: names: must be a list or an {{id: name}} mapping, not {type(names).__name__}")
    if names is None:
        return [f"class_{i}" for i in range(nc)]
    if nc is not None and nc != len(names):
        raise InputError(f"{where}: nc: {nc} but names: lists {len(names)} classes; make them agree (or drop nc:)")
    if not names:
        raise InputError(f"{where}: names: is empty; list the class names")
    names = ["" if n is None else str(n).strip() for n in names]
    if "" in names:
        raise InputError(f"{where}: class {names.index('')} has an empty name; name every class")
    dup = next((n for n, k in Counter(names).items() if k > 1), None)
    if dup is not None:
        raise InputError(f"{where}: class name {dup!r} appears {names.count(dup)} times in names:; names must differ")
    return names


def yolo_root(cfg: dict, yaml_path: Path) -> Path:
    p = cfg.get("path")
    if not p:
        return yaml_path.parent.resolve()
    p = Path(str(p)).expanduser()
    tried = [p] if p.is_absolute() else [yaml_path.parent / p, Path.cwd() / p]
    for t in tried:
        if t.is_dir():
            return t.resolve()
    raise InputError(f"{yaml_path}: path: {p} not found (tried {', '.join(map(str, tried))}); fix or drop path:")


def split_paths(root: Path, entry, where: str, split: str) -> list[Path]:
    """The folders / list files of a split, with ultralytics' `../` retry."""
    out = []
    for e in entry if isinstance(entry, list) else [entry]:
        e = str(e)
        p = (root / e).resolve()
        if not p.exists() and e.startswith("../"):  # a data.yaml written for the tool's own layout: root/train/...
            p = (root / e[3:]).resolve()
        if not p.exists():
            raise InputError(f"{where}: {split}: {e} not found (looked for {p}); fix the path or the yaml's path:")
        out.append(p)
    return out


def _list_entry(line: str, base: Path) -> Path:
    p = Path(line)
    if p.is_absolute():
        return p
    if line.startswith("./"):
        return (base / line[2:]).resolve()
    here = (base / p).resolve()
    return here if here.exists() or not p.exists() else p.resolve()


def list_images(p: Path, where: str) -> list[Path]:
    if p.is_dir():
        return sorted(q for q in p.rglob("*") if q.suffix.lower() in IMG_SUFFIXES)
    if p.suffix == ".txt":
        lines = [ln.strip() for ln in p.read_text().splitlines() if ln.strip()]
        return [_list_entry(ln, p.parent) for ln in lines]
    raise InputError(f"{where}: {p} is neither an image folder nor a .txt list of images; fix the yaml")


def label_path(img: Path) -> Path:
    """images/.../x.jpg -> labels/.../x.txt (the last `images` folder in the path); else x.txt beside the image."""
    parts = list(img.parts)
    if "images" not in parts:
        return img.with_suffix(".txt")
    i = len(parts) - 1 - parts[::-1].index("images")
    return Path(*parts[:i], "labels", *parts[i + 1 :]).with_suffix(".txt")


def _row(path: Path, n: int, line: str, nc: int, notes: Counter) -> tuple[int, list[float]]:
    """One label row -> (class, normalised xyxy); Skip (with file and line) when it cannot be trusted."""
    parts = line.split()
    expected = "expected 'class cx cy w h' or a polygon 'class x1 y1 x2 y2 x3 y3 ...'"
    try:
        v = [float(x) for x in parts]
        if not np.isfinite(v).all():
            raise ValueError
    except ValueError:
        raise Skip(
            "unparsable label line", f"{path}:{n}: cannot parse {line.strip()!r} ({expected}); image skipped"
        ) from None
    c, xy = v[0], v[1:]
    if len(xy) == 4:
        cx, cy, w, h = xy
        box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
    elif len(xy) >= 6 and len(xy) % 2 == 0:
        pts = np.array(xy).reshape(-1, 2)
        box = [*pts.min(0).tolist(), *pts.max(0).tolist()]
        notes["polygons read as their enclosing boxes"] += 1
    else:
        raise Skip("unparsable label line", f"{path}:{n}: {len(parts)} values ({expected}); image skipped")
    if c != int(c) or c < 0:
        raise Skip("label with a bad class id", f"{path}:{n}: class id {parts[0]} is not 0..{nc - 1}; image skipped")
    if c >= nc:
        raise Skip(
            f"label with class {int(c)} >= nc {nc}",
            f"{path}:{n}: class id {int(c)} is outside 0..{nc - 1} (the yaml names {nc} classes); image skipped",
        )
    bad = [x for x in xy if not -NORM_TOL <= x <= 1 + NORM_TOL]
    if bad:
        raise Skip(
            "label not normalised to 0..1",
            f"{path}:{n}: coordinate {bad[0]:g} is outside 0..1: YOLO labels are fractions of the image's width "
            "and height (these look like pixels); image skipped",
        )
    return int(c), box


def parse_yolo_labels(
    path: Path, w: int, h: int, nc: int, notes: Counter | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (xyxy pixels of a w x h image) and classes of one label file; Skip when the image must be left out."""
    notes = Counter() if notes is None else notes
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise Skip("unreadable label file", f"{path}: cannot read ({type(e).__name__}: {e}); image skipped") from None
    rows, lines = [], []
    for n, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            c, box = _row(path, n, line, nc, notes)
            rows.append([c, *box])
            lines.append(n)
    arr = np.array(rows, np.float64).reshape(-1, 5)
    _, first = np.unique(arr, axis=0, return_index=True)
    if len(first) < len(arr):  # the same object twice would count twice in training and in the mAP
        LOG.warning(f"{path}: {len(arr) - len(first)} repeated label rows removed")
        notes["repeated labels removed"] += len(arr) - len(first)
        first = np.sort(first)
        arr, lines = arr[first], [lines[i] for i in first]
    boxes = arr[:, 1:] * np.array([w, h, w, h])
    return check_boxes(boxes, arr[:, 0].astype(np.int64), w, h, str(path), lines, notes)


def open_yolo(yaml_path: Path, split: str) -> DetSource:
    cfg = read_yaml(yaml_path)
    where = str(yaml_path)
    names = yolo_names(cfg, where)
    root = yolo_root(cfg, yaml_path)
    key = "validation" if split == "val" and "val" not in cfg and "validation" in cfg else split
    if not cfg.get(key):
        raise InputError(f"{where} has no {split!r} entry; add '{split}: images/{split}' (found {list(cfg)})")
    images = [img for p in split_paths(root, cfg[key], where, split) for img in list_images(p, where)]
    records: list[DetRecord] = []
    skipped, notes = Counter(), Counter()
    for img in images:
        try:
            info = image_info(img)
            rec = DetRecord(str(img), info.width, info.height)
            lbl = label_path(img)
            if lbl.is_file():
                rec.boxes, rec.classes = parse_yolo_labels(lbl, rec.width, rec.height, len(names), notes)
        except Skip as e:
            e.count(skipped)
            continue
        records.append(rec)
    # label files without an image (in split folders; a .txt image list names its own images): reported
    have = {label_path(p) for p in images}
    for d in split_paths(root, cfg[key], where, split):
        labels = label_path(d / "x.jpg").parent
        if d.is_dir() and labels != d and labels.is_dir():
            for lbl in sorted(labels.rglob("*.txt")):
                if lbl not in have:
                    LOG.warning(f"{lbl}: label file without an image (no {lbl.stem}.* in {d}); skipped")
                    notes["label files without an image"] += 1
    return DetSource(records, names, f"{yaml_path}:{split}", "yolo", skipped=skipped, notes=notes)
