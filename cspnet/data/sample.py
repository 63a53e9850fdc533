"""A tiny generated dataset, so every command can be tried on a fresh clone with no network: `cspnet sample OUT`.

Three classes of shapes (circle, square, triangle) drawn on noisy backgrounds, the same seed giving the same files:

    OUT/classify/{train,val}/<class>/*.png            an image folder (classify train/val/predict)
    OUT/detect/data.yaml, images/{train,val}, labels/{train,val}    YOLO layout (what ultralytics and exporters write)
    OUT/detect_coco/annotations/instances_{train,val}.json + images/{train,val}    COCO JSON
    OUT/detect_voc/Annotations/*.xml, JPEGImages/*.jpg, ImageSets/Main/{train,val}.txt   Pascal VOC devkit
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle")
COLORS = ((240, 60, 60), (60, 220, 90), (80, 140, 255), (250, 210, 40), (220, 110, 250))  # bright on dark


def _background(rng: random.Random, size: int) -> Image.Image:
    base = [rng.randint(0, 80) for _ in range(3)]  # dark, so every shape stands out as a user's objects would
    img = Image.new("RGB", (size, size), tuple(base))
    px = img.load()
    for _ in range(size * size // 8):  # sparse noise: the shapes are not the only texture
        x, y = rng.randrange(size), rng.randrange(size)
        px[x, y] = tuple(min(255, max(0, c + rng.randint(-60, 60))) for c in base)
    return img


def _draw(d: ImageDraw.ImageDraw, cls: int, box: tuple[int, int, int, int], color: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = box
    if cls == 0:
        d.ellipse(box, fill=color)
    elif cls == 1:
        d.rectangle(box, fill=color)
    else:
        d.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=color)


def _objects(rng: random.Random, size: int, n: int) -> list[tuple[int, tuple[int, int, int, int]]]:
    """n shapes with boxes that do not overlap much (each in its own cell of a 2x2 grid)."""
    cells = rng.sample([(0, 0), (1, 0), (0, 1), (1, 1)], n)
    half = size // 2
    out = []
    for cx, cy in cells:
        s = rng.randint(half // 3, half - 6)
        x0 = cx * half + rng.randint(2, half - s - 2)
        y0 = cy * half + rng.randint(2, half - s - 2)
        out.append((rng.randrange(len(CLASSES)), (x0, y0, x0 + s, y0 + s)))
    return out


def write_classify(out: Path, per_class: dict[str, int], size: int, seed: int) -> None:
    rng = random.Random(seed)
    for split, n in per_class.items():
        for ci, name in enumerate(CLASSES):
            folder = out / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = _background(rng, size)
                s = rng.randint(size // 2, size - 4)
                x0, y0 = rng.randint(0, size - s), rng.randint(0, size - s)
                _draw(ImageDraw.Draw(img), ci, (x0, y0, x0 + s - 1, y0 + s - 1), rng.choice(COLORS))
                img.save(folder / f"{name}_{i:03d}.png")


def write_detect(out: Path, images: dict[str, int], size: int, seed: int) -> None:
    """The same images in YOLO (out/detect), COCO (out/detect_coco) and VOC (out/detect_voc) layouts."""
    rng = random.Random(seed + 1)
    yolo, coco, voc = out / "detect", out / "detect_coco", out / "detect_voc"
    (voc / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    (voc / "Annotations").mkdir(parents=True, exist_ok=True)
    (voc / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (coco / "annotations").mkdir(parents=True, exist_ok=True)
    for split, n in images.items():
        for sub in (yolo / "images" / split, yolo / "labels" / split, coco / "images" / split):
            sub.mkdir(parents=True, exist_ok=True)
        cats = [{"id": i + 1, "name": c} for i, c in enumerate(CLASSES)]
        doc: dict = {"images": [], "annotations": [], "categories": cats}
        stems = []
        for i in range(n):
            stem = f"{split}_{i:03d}"
            stems.append(stem)
            img = _background(rng, size)
            d = ImageDraw.Draw(img)
            objs = _objects(rng, size, rng.randint(1, 3))
            for cls, box in objs:
                _draw(d, cls, box, rng.choice(COLORS))
            img.save(yolo / "images" / split / f"{stem}.jpg", quality=90)
            img.save(coco / "images" / split / f"{stem}.jpg", quality=90)
            img.save(voc / "JPEGImages" / f"{stem}.jpg", quality=90)
            rows, xml_objs = [], []
            doc["images"].append({"id": i + 1, "file_name": f"{stem}.jpg", "width": size, "height": size})
            for cls, (x0, y0, x1, y1) in objs:
                w, h = x1 - x0, y1 - y0
                rows.append(f"{cls} {(x0 + w / 2) / size:.6f} {(y0 + h / 2) / size:.6f} {w / size:.6f} {h / size:.6f}")
                ann = {"id": len(doc["annotations"]) + 1, "image_id": i + 1, "category_id": cls + 1}
                doc["annotations"].append({**ann, "bbox": [x0, y0, w, h], "area": w * h, "iscrowd": 0})
                xml_objs.append(
                    f"<object><name>{CLASSES[cls]}</name><difficult>0</difficult><bndbox><xmin>{x0 + 1}</xmin>"
                    f"<ymin>{y0 + 1}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"  # VOC: 1-based
                )
            (yolo / "labels" / split / f"{stem}.txt").write_text("\n".join(rows) + "\n")
            (voc / "Annotations" / f"{stem}.xml").write_text(
                f"<annotation><filename>{stem}.jpg</filename><size><width>{size}</width><height>{size}</height>"
                f"<depth>3</depth></size>{''.join(xml_objs)}</annotation>\n"
            )
        (coco / "annotations" / f"instances_{split}.json").write_text(json.dumps(doc))
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(stems) + "\n")
    names = "\n".join(f"  {i}: {c}" for i, c in enumerate(CLASSES))
    (yolo / "data.yaml").write_text(f"path: .\ntrain: images/train\nval: images/val\nnames:\n{names}\n")


def make_sample(out: str | Path, seed: int = 0) -> Path:
    """Write the sample dataset to `out` (which must not hold one already); returns `out`."""
    out = Path(out)
    write_classify(out / "classify", {"train": 40, "val": 12}, size=32, seed=seed)
    write_detect(out, {"train": 48, "val": 16}, size=128, seed=seed)
    return out


__all__ = ["CLASSES", "make_sample"]
