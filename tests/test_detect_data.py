"""Detection data: the three formats (coco128 orphans and backgrounds included), bad input, and box-correct augmentation."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cspnet.data.detection import DetRecord, DetSource, in_val_split, open_detection, to_coco_gt
from cspnet.data.detection_aug import (
    AugCfg,
    DetectionDataset,
    affine_crop,
    detection_collate,
    geometric,
    letterbox,
    make_sample,
    mosaic4,
    photometric,
    read_image,
    resize_long,
)
from cspnet.errors import InputError


# ---- formats ----------------------------------------------------------------------------------------------------------
def test_coco128_yolo_orphans_and_backgrounds(shared, caplog):
    with caplog.at_level(logging.WARNING, "cspnet.data"):
        src = open_detection(shared / "data/coco128", "train")
    assert src.format == "yolo" and len(src.names) == 80 and src.names[0] == "person"
    assert len(src.records) == 128  # every image, the two without label files as backgrounds
    backgrounds = sorted(Path(r.path).stem for r in src.records if len(r.boxes) == 0)
    assert backgrounds == ["000000000250", "000000000508"]
    orphans = [m for m in caplog.messages if "label file without an image" in m]
    assert len(orphans) == 2 and "000000000656" in orphans[0] and "000000000659" in orphans[1]
    assert sum(len(r.boxes) for r in src.records) == 929
    r = next(r for r in src.records if r.path.endswith("000000000009.jpg"))
    assert (r.width, r.height) == (640, 480) and r.classes[0] == 45
    # first label line: 45 0.479492 0.688771 0.955609 0.5955 -> xyxy pixels
    np.testing.assert_allclose(r.boxes[0], [1.08, 187.69, 612.67, 473.53], atol=0.01)


def test_coco_json_matches_yolo_labels(shared):
    js = shared / "data/coco128/annotations/instances_train2017.json"
    train, val = open_detection(js, "train"), open_detection(js, "val")
    assert train.format == "coco" and train.category_ids[:3] == [1, 2, 3] and train.names[0] == "person"
    names = [Path(r.path).name for r in train.records + val.records]
    assert len(names) == len(set(names)) == 128  # the deterministic split covers every image once
    assert all(in_val_split(Path(r.path).stem) for r in val.records)
    yolo = {Path(r.path).name: r for r in open_detection(shared / "data/coco128", "train").records}
    for r in train.records + val.records:  # the same boxes as the YOLO labels (rounded to 6 decimals there)
        y = yolo[Path(r.path).name]
        assert r.image_id and (r.width, r.height) == (y.width, y.height)
        assert len(r.boxes) == len(y.boxes)
        if len(r.boxes):
            diff = np.abs(r.boxes[:, None] - y.boxes[None]).max(-1)  # every box has its twin, same class
            j = diff.argmin(1)
            assert (diff.min(1) < 0.05).all() and (r.classes == y.classes[j]).all()


def test_raccoon_flat_voc_split(shared):
    train, val = open_detection(shared / "data/raccoon", "train"), open_detection(shared / "data/raccoon", "val")
    assert train.format == "voc" and train.names == ["raccoon"]
    assert len(train.records) + len(val.records) == 200 and 30 <= len(val.records) <= 50
    assert all(in_val_split(Path(r.path).stem) for r in val.records)
    assert not any(in_val_split(Path(r.path).stem) for r in train.records)
    assert sum(len(r.boxes) for r in train.records + val.records) == 217
    r1 = next(r for r in train.records + val.records if Path(r.path).name == "raccoon-1.jpg")
    np.testing.assert_allclose(r1.boxes[0], [80, 87, 522, 408])  # VOC 1-based corners 81, 88 -> 0-based


def _jpg(path: Path, w: int = 64, h: int = 48, color=(200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), color).save(path)
    return path


def _voc_xml(path: Path, objs: list[tuple[str, list[int]]], w: int = 64, h: int = 48) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    o = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
        f"<ymax>{b[3]}</ymax></bndbox></object>"
        for n, b in objs
    )
    path.write_text(f"<annotation><size><width>{w}</width><height>{h}</height></size>{o}</annotation>")


def test_voc_devkit_layout(tmp_path):
    for i, stem in enumerate(["a", "b", "c"]):
        _jpg(tmp_path / "JPEGImages" / f"{stem}.jpg")
        _voc_xml(tmp_path / "Annotations" / f"{stem}.xml", [("dog" if i else "cat", [11, 11, 30, 40])])
    (tmp_path / "ImageSets/Main").mkdir(parents=True)
    (tmp_path / "ImageSets/Main/train.txt").write_text("a\nb\n")
    (tmp_path / "ImageSets/Main/val.txt").write_text("c\n")
    (tmp_path / "ImageSets/Main/test.txt").write_text("a\n")
    train = open_detection(tmp_path, "train")
    assert train.format == "voc" and train.names == ["cat", "dog"]
    assert [Path(r.path).stem for r in train.records] == ["a", "b"] and train.records[0].classes.tolist() == [0]
    np.testing.assert_allclose(train.records[1].boxes, [[10, 10, 30, 40]])
    assert [Path(r.path).stem for r in open_detection(tmp_path, "val").records] == ["c"]
    assert len(open_detection(tmp_path, "test").records) == 1
    with pytest.raises(InputError, match="splits here: test, train, val"):
        open_detection(tmp_path, "trainval")


def _yolo_set(root: Path, labels: dict[str, str], extra_images: tuple[str, ...] = ()) -> Path:
    for stem, text in labels.items():
        _jpg(root / "images/train" / f"{stem}.jpg")
        (root / "labels/train").mkdir(parents=True, exist_ok=True)
        (root / "labels/train" / f"{stem}.txt").write_text(text)
    for stem in extra_images:
        _jpg(root / "images/train" / f"{stem}.jpg")
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/train\nnames: [a, b]\n")
    return root


def test_bad_labels_reported_with_file_and_line(tmp_path, caplog):
    root = _yolo_set(
        tmp_path,
        {
            "good": "0 0.5 0.5 0.5 0.5\n",
            "garbled": "0 0.5 0.5 0.5 0.5\n1 0.5 oops 0.1 0.1\n",
            "badclass": "\n0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.2 0.2\n",
            "outside": "0 0.9 0.5 0.5 0.5\n1 0.5 0.5 0.0 0.3\n",
            "empty": "",
        },
        extra_images=("nolabel",),
    )
    (root / "images/train/corrupt.jpg").write_bytes(b"not a jpeg at all")
    with caplog.at_level(logging.WARNING, "cspnet.data"):
        src = open_detection(root, "train")
    log = "\n".join(caplog.messages)
    assert "garbled.txt:2: cannot parse" in log and "badclass.txt:3: class id 7 is outside 0..1" in log
    assert "outside.txt:1: box" in log and "clipped" in log and "outside.txt:2: box" in log and "no area" in log
    assert "corrupt.jpg" in log
    stems = {Path(r.path).stem: r for r in src.records}
    assert sorted(stems) == ["empty", "good", "nolabel", "outside"]  # garbled, badclass, corrupt skipped
    assert len(stems["empty"].boxes) == 0 and len(stems["nolabel"].boxes) == 0  # backgrounds
    np.testing.assert_allclose(stems["outside"].boxes, [[41.6, 12, 64, 36]], atol=1e-4)  # clipped at x = 64


def test_truncated_image_skipped_by_loader(tmp_path, caplog):
    root = _yolo_set(tmp_path, {"a": "0 0.5 0.5 0.5 0.5\n", "b": "1 0.5 0.5 0.5 0.5\n"})
    noise = np.random.default_rng(0).integers(0, 255, (150, 200, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "images/train/b.jpg")
    data = (root / "images/train/b.jpg").read_bytes()
    (root / "images/train/b.jpg").write_bytes(data[: len(data) // 3])  # header fine, pixels cut off
    ds = DetectionDataset(open_detection(root, "train"), 32)
    with caplog.at_level(logging.WARNING, "cspnet.data"):
        batch = detection_collate([ds[i] for i in range(len(ds))])
    assert batch["skipped"] == 1 and len(batch["images"]) == 1 and "b.jpg" in "\n".join(caplog.messages)


def test_sixteen_bit_and_grayscale(tmp_path):
    a16 = (np.arange(12 * 10, dtype=np.uint16).reshape(12, 10) * 500).astype(np.uint16)  # up to 59500
    Image.fromarray(a16).save(tmp_path / "g16.png")
    x = read_image(str(tmp_path / "g16.png"))
    assert x.shape == (3, 12, 10) and x.dtype == torch.uint8
    np.testing.assert_array_equal(x[0].numpy(), np.rint(a16 / 257).astype(np.uint8))  # scaled, not clipped at 255
    assert (x[0] == x[1]).all() and (x[1] == x[2]).all()
    g = np.tile(np.arange(0, 250, 25, dtype=np.uint8), (4, 1))
    Image.fromarray(g, "L").save(tmp_path / "g8.png")
    y = read_image(str(tmp_path / "g8.png"))
    assert y.shape == (3, 4, 10) and (y == torch.from_numpy(g)).all()


def test_coco_gt_export_round_trip():
    src = DetSource(
        [DetRecord("x/b.jpg", 40, 30, np.array([[1, 2, 11, 22]], np.float32), np.array([1]))], ["p", "q"], "t", "voc"
    )
    gt = to_coco_gt(src)
    assert gt["images"] == [{"id": 1, "file_name": "b.jpg", "width": 40, "height": 30}]
    assert gt["annotations"][0]["bbox"] == [1, 2, 10, 20] and gt["annotations"][0]["category_id"] == 2
    assert gt["categories"] == [{"id": 1, "name": "p"}, {"id": 2, "name": "q"}]
    json.dumps(gt)


# ---- boxes through every transform --------------------------------------------------------------------------------
def _rect_image(h: int, w: int, box: list[int]) -> dict:
    img = torch.zeros(3, h, w, dtype=torch.uint8)
    x1, y1, x2, y2 = box
    img[:, y1:y2, x1:x2] = 255
    return make_sample(img, [box], [3])


def _check_encloses(sample: dict, tight: float = 2.5) -> None:
    """Every white pixel is inside a box; every box is the white region's extent within `tight` pixels."""
    img = sample["image"].as_subclass(torch.Tensor)
    boxes = sample["boxes"].as_subclass(torch.Tensor)
    white = img.min(0).values > 200
    ys, xs = torch.nonzero(white, as_tuple=True)
    assert len(boxes) >= 1 and len(xs) > 0
    cx, cy = xs.float() + 0.5, ys.float() + 0.5  # pixel centres
    inside = torch.zeros_like(cx, dtype=torch.bool)
    for b in boxes:
        m = (cx >= b[0] - 1) & (cx <= b[2] + 1) & (cy >= b[1] - 1) & (cy <= b[3] + 1)
        assert m.any(), f"box {b.tolist()} holds none of the rectangle's pixels"
        ext = torch.stack([xs[m].min(), ys[m].min(), xs[m].max() + 1, ys[m].max() + 1]).float()
        assert (ext - b).abs().max() <= tight, f"box {b.tolist()} vs pixels {ext.tolist()}"
        inside |= m
    assert inside.all(), "rectangle pixels outside every box"


def test_boxes_follow_letterbox_and_resize():
    s = _rect_image(60, 100, [20, 10, 70, 40])
    out, r, pad = letterbox(s, 80)
    assert out["image"].shape[-2:] == (80, 80) and r == 0.8 and pad == (0, 16)
    assert (out["image"][:, :10] == 114).all()  # grey padding
    _check_encloses(out)
    _check_encloses(resize_long(s, 50))


def test_boxes_follow_mosaic():
    parts = [_rect_image(60, 100, [20, 10, 70, 40]), _rect_image(80, 50, [5, 30, 45, 75])]
    m = mosaic4([parts[0], parts[1], parts[1], parts[0]], 64, center=(70, 60))
    assert m["image"].shape[-2:] == (128, 128) and len(m["boxes"]) == 4
    _check_encloses(m)


@pytest.mark.parametrize("seed", range(4))
def test_boxes_follow_affines(seed):
    torch.manual_seed(seed)
    cfg = AugCfg(degrees=15, translate=0.1, scale=0.4, shear=0)
    s = _rect_image(96, 96, [30, 25, 70, 60])
    _check_encloses(affine_crop(s, 72, cfg), tight=3.0)  # the mosaic path's affine, sampled into 72x72
    _check_encloses(geometric(cfg)(s), tight=3.0)  # v2.RandomAffine (letterbox path)


def test_boxes_follow_flips_and_hsv():
    s = _rect_image(40, 60, [5, 8, 25, 30])
    lr = photometric(AugCfg(hsv_h=0, hsv_s=0, hsv_v=0, fliplr=1.0))(s)
    assert lr["boxes"].tolist() == [[35, 8, 55, 30]]
    _check_encloses(lr)
    ud = photometric(AugCfg(hsv_h=0, hsv_s=0, hsv_v=0, fliplr=0, flipud=1.0))(s)
    assert ud["boxes"].tolist() == [[5, 10, 25, 32]]
    s["image"][0] = 80  # colour, so that saturation and hue change something
    hsv = photometric(AugCfg(hsv_h=0.1, hsv_s=0.7, hsv_v=0.4, fliplr=0))(s)
    assert hsv["boxes"].tolist() == s["boxes"].tolist() and not torch.equal(hsv["image"], s["image"])


def test_training_pipeline_keeps_boxes(tmp_path):
    """The whole training sample (mosaic or letterbox, affine, flips) on white rectangles in black images."""
    root = tmp_path / "d"
    for i in range(4):
        img = np.zeros((48 + 8 * i, 64, 3), np.uint8)
        img[10 : 30 + i, 12 + i : 40] = 255
        (root / "images/train").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / f"images/train/{i}.png")  # PNG: no JPEG ringing around the edges
        (root / "labels/train").mkdir(parents=True, exist_ok=True)
        h = 48 + 8 * i
        x1, x2, y1, y2 = 12 + i, 40, 10, 30 + i
        (root / f"labels/train/{i}.txt").write_text(
            f"0 {(x1 + x2) / 128} {(y1 + y2) / 2 / h} {(x2 - x1) / 64} {(y2 - y1) / h}"
        )
    (root / "data.yaml").write_text("train: images/train\nval: images/train\nnames: [box]\n")
    ds = DetectionDataset(open_detection(root, "train"), 64, train=True, aug=AugCfg(degrees=10, hsv_v=0, hsv_s=0))
    torch.manual_seed(1)
    for i in range(12):
        ds.mosaic = 1.0 if i % 2 else 0.0
        sample = ds[i % 4]
        assert sample["image"].shape == (3, 64, 64)
        if len(sample["boxes"]):
            _check_encloses(sample, tight=3.0)
    ds.close_mosaic()
    assert ds.mosaic == 0.0
