"""Detection data as labelling tools export it (issue 19): ultralytics' data.yaml paths (Roboflow's layout), fields
checked against each other, labels that mean what the user saw (EXIF, polygons, pixels), VOC difficult and COCO
crowd as ignore regions, and one summary line per split."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cspnet.data.detection import DetRecord, DetSource, open_detection, to_coco_gt
from cspnet.data.detection_aug import DetectionDataset, read_image
from cspnet.engine.metrics_coco import CocoMetric
from cspnet.errors import InputError


def _png(path: Path, w: int = 40, h: int = 30, box: tuple[int, int, int, int] | None = None, exif: int = 1) -> Path:
    """A black image (displayed size w x h) with a white box; `exif` stores it turned with that orientation tag."""
    a = np.zeros((h, w, 3), np.uint8)
    if box:
        a[box[1] : box[3], box[0] : box[2]] = 255
    im = Image.fromarray(a)
    if exif != 1:  # store the pixels so that applying the tag shows `a`
        im = im.transpose(
            {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270, 3: Image.Transpose.ROTATE_180}[exif]
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    ex = Image.Exif()
    if exif != 1:
        ex[0x0112] = exif
    im.save(path, exif=ex)
    return path


def _label(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _roboflow(root: Path, yaml_text: str | None = None) -> Path:
    """Roboflow's YOLO export: data.yaml at the root naming ../train/images, ../valid/images, ../test/images."""
    for split, n in (("train", 3), ("valid", 2), ("test", 1)):
        for i in range(n):
            _png(root / split / "images" / f"{split}{i}.png")
            _label(root / split / "labels" / f"{split}{i}.txt", f"{i % 2} 0.5 0.5 0.5 0.5\n")
    text = yaml_text or (
        "train: ../train/images\nval: ../valid/images\ntest: ../test/images\n\nnc: 2\nnames: ['cat', 'dog']\n"
    )
    (root / "data.yaml").write_text(text)
    return root


# ---- data.yaml paths, as ultralytics resolves them -----------------------------------------------------------------
def test_roboflow_layout_from_anywhere(tmp_path, monkeypatch):
    root = _roboflow(tmp_path / "export")
    monkeypatch.chdir(tmp_path)  # the yaml's ../train/images does not exist from the root: retried as train/images
    for data in (root, root / "data.yaml", Path("export")):
        train, val, test = (open_detection(data, s) for s in ("train", "val", "test"))
        assert train.names == ["cat", "dog"] and (len(train.records), len(val.records), len(test.records)) == (3, 2, 1)
        assert all("/valid/images/" in r.path for r in val.records)
        np.testing.assert_allclose(train.records[0].boxes, [[10, 7.5, 30, 22.5]])  # labels from train/labels
    # ultralytics' names as an {id: name} mapping, and the 'validation:' key for val
    (root / "data.yaml").write_text("train: ../train/images\nvalidation: ../valid/images\nnames: {1: dog, 0: cat}\n")
    assert open_detection(root, "val").names == ["cat", "dog"] and len(open_detection(root, "val").records) == 2


def test_path_key_and_image_lists(tmp_path, monkeypatch):
    root = _roboflow(tmp_path / "d")
    yml = tmp_path / "cfg" / "my.yaml"
    yml.parent.mkdir()
    yml.write_text(f"path: {root}\ntrain: train/images\nval: valid/images\nnames: [cat, dog]\n")
    assert len(open_detection(yml, "train").records) == 3  # absolute path:
    yml.write_text("path: ../d\ntrain: train/images\nval: valid/images\nnames: [cat, dog]\n")
    assert len(open_detection(yml, "val").records) == 2  # relative to the yaml's folder
    monkeypatch.chdir(tmp_path)
    yml.write_text("path: d\ntrain: train/images\nval: valid/images\nnames: [cat, dog]\n")
    assert len(open_detection(yml, "val").records) == 2  # relative to the working directory (ultralytics)
    # a .txt list: './x' is relative to the list's folder, other lines there or in the working directory
    (root / "list.txt").write_text("./train/images/train0.png\ntrain/images/train1.png\nd/valid/images/valid0.png\n")
    (root / "data.yaml").write_text("train: list.txt\nval: list.txt\nnames: [cat, dog]\n")
    src = open_detection(root, "train")
    assert [Path(r.path).name for r in src.records] == ["train0.png", "train1.png", "valid0.png"]
    assert all(len(r.boxes) == 1 for r in src.records)


@pytest.mark.parametrize(
    "text, message",
    [
        ("nc: 3\nnames: [cat, dog]", "nc: 3 but names: lists 2 classes"),
        ("names: [cat, dog, cat]", "class name 'cat' appears 2 times"),
        ("names: {0: cat, 2: dog}", "ids must run 0..1 without gaps"),
        ("nc: two", "not a positive whole number"),
        ("names: []", "names: is empty"),
        ("nc: 2", None),  # names from nc: class_0, class_1
    ],
)
def test_yaml_fields_checked_against_each_other(tmp_path, text, message):
    root = _roboflow(tmp_path, f"train: ../train/images\nval: ../valid/images\n{text}\n")
    if message is None:
        assert open_detection(root).names == ["class_0", "class_1"]
        return
    with pytest.raises(InputError, match=message) as e:
        open_detection(root)
    assert "\n" not in str(e.value)


def test_missing_split_refused(tmp_path):
    root = _roboflow(tmp_path, "train: ../train/images\nval: ../val/images\nnames: [cat, dog]\n")
    with pytest.raises(InputError, match=r"val: \.\./val/images not found"):
        open_detection(root, "val")
    with pytest.raises(InputError, match="has no 'test' entry"):
        open_detection(root, "test")


# ---- labels: what the user saw ---------------------------------------------------------------------------------------
def _yolo(root: Path, labels: dict[str, str], names=("a", "b", "c")) -> Path:
    for stem, text in labels.items():
        _png(root / "images" / f"{stem}.png", 40, 30)
        if text is not None:
            _label(root / "labels" / f"{stem}.txt", text)
    (root / "data.yaml").write_text(f"train: images\nval: images\nnames: {list(names)}\n")
    return root


def test_label_rows_as_ultralytics_reads_them(tmp_path, caplog):
    root = _yolo(
        tmp_path,
        {
            "polygon": "1 0.25 0.2 0.75 0.2 0.5 0.8\n",  # a triangle: its enclosing box
            "mixed": "0 0.5 0.5 0.2 0.2\n2 0.1 0.1 0.3 0.1 0.3 0.4 0.1 0.4\n",
            "repeated": "0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2 0.2\n",
            "zero": "0 0.5 0.5 0 0.2\n1 0.5 0.5 0.2 0.2\n",
            "pixels": "0 20 15 10 10\n",
            "edge": "0 1.005 0.5 0.2 0.2\n",  # within ultralytics' 0.01: kept, clipped
            "sixcols": "0 0.5 0.5 0.2 0.2 0.9\n",  # a prediction file's score column: not a label
        },
    )
    with caplog.at_level(logging.WARNING, "cspnet.data"):
        src = open_detection(root)
    log = "\n".join(caplog.messages)
    recs = {Path(r.path).stem: r for r in src.records}
    assert sorted(recs) == ["edge", "mixed", "polygon", "repeated", "zero"]
    np.testing.assert_allclose(recs["polygon"].boxes, [[10, 6, 30, 24]], atol=1e-4)
    assert recs["mixed"].classes.tolist() == [0, 2]
    np.testing.assert_allclose(recs["mixed"].boxes[1], [4, 3, 12, 12], atol=1e-4)
    assert recs["repeated"].classes.tolist() == [0, 1] and "repeated.txt: 1 repeated label rows removed" in log
    assert recs["zero"].classes.tolist() == [1] and "zero.txt:1: box" in log and "no area" in log
    assert "pixels.txt:1: coordinate 20 is outside 0..1" in log and "sixcols.txt:1: 6 values" in log
    np.testing.assert_allclose(recs["edge"].boxes, [[36.2, 12, 40, 18]], atol=1e-3)
    assert src.skipped == {"label not normalised to 0..1": 1, "unparsable label line": 1}
    assert src.notes["polygons read as their enclosing boxes"] == 2 and src.notes["repeated labels removed"] == 1


def test_summary_line_counts_what_was_skipped_and_why(tmp_path, caplog):
    labels = {f"ok{i}": f"{i % 3} 0.5 0.5 0.4 0.4\n0 0.3 0.3 0.2 0.2\n" for i in range(7)}
    labels["background"] = None
    labels["badclass"] = "0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.2 0.2\n"
    root = _yolo(tmp_path, labels)
    (root / "images/corrupt.png").write_bytes(b"not an image")
    with caplog.at_level(logging.WARNING, "cspnet.data"):
        src = open_detection(root, "val")
    assert "badclass.txt:2: class id 7 is outside 0..2" in "\n".join(caplog.messages)
    assert src.summary("val") == (
        "val: 8 of 10 images, 14 boxes, 3 classes; 2 skipped (1 corrupt image, 1 label with class 7 >= nc 3)"
    )


def test_exif_orientation_as_the_labeller_saw_it(tmp_path):
    # displayed 30 wide x 40 tall with a box at (5, 20)-(15, 35); stored turned (EXIF orientation 6)
    root = tmp_path / "y"
    img = _png(root / "images/turned.png", 30, 40, (5, 20, 15, 35), exif=6)
    assert Image.open(img).size == (40, 30)  # stored
    _label(root / "labels/turned.txt", "0 0.333333 0.6875 0.333333 0.375\n")  # normalised to the displayed image
    (root / "data.yaml").write_text("train: images\nval: images\nnames: [x]\n")
    rec = open_detection(root).records[0]
    assert (rec.width, rec.height, rec.exif) == (30, 40, True)
    np.testing.assert_allclose(rec.boxes, [[5, 20, 15, 35]], atol=1e-3)
    x = read_image(rec.path)
    assert x.shape == (3, 40, 30) and x[0, 20:35, 5:15].min() == 255 and x[0].sum() == 255 * 150
    sample = DetectionDataset(open_detection(root), 40)[0]  # letterboxed: box still on the white pixels
    b = sample["boxes"].as_subclass(torch.Tensor)[0].round().int().tolist()
    im = sample["image"].as_subclass(torch.Tensor)
    assert im[0, b[1] : b[3], b[0] : b[2]].min() == 255 and b[2] - b[0] == 10
    # VOC: a tool that ignored the tag recorded the stored size, its boxes are on the stored pixels
    voc = tmp_path / "v"
    _png(voc / "turned.png", 30, 40, (5, 20, 15, 35), exif=6)  # stored: the box at x 20..35, y 15..25
    (voc / "turned.xml").write_text(_voc_xml([("x", (21, 16, 35, 25), 0)], 40, 30))
    rec = open_detection(voc, None).records[0]
    assert (rec.width, rec.height, rec.exif) == (40, 30, False)
    x = read_image(rec.path, exif=rec.exif)
    assert x.shape == (3, 30, 40) and x[0, 15:25, 20:35].min() == 255
    (voc / "turned.xml").write_text(_voc_xml([("x", (21, 16, 35, 25), 0)], 50, 30))  # neither size: refused
    with pytest.raises(InputError, match="no usable images"):
        open_detection(voc, None)


# ---- VOC difficult and COCO crowd: ignore regions --------------------------------------------------------------------
def _voc_xml(objs, w: int, h: int) -> str:
    o = "".join(
        f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b, d in objs
    )
    return f"<annotation><size><width>{w}</width><height>{h}</height></size>{o}</annotation>"


def _score(src: DetSource, dets: dict[str, list[tuple]]) -> tuple[CocoMetric, dict]:
    """CocoMetric on given detections (xyxy, class[, score: default 0.9]) per image stem."""
    metric = CocoMetric(src)
    recs = sorted(src.records, key=lambda r: r.path)
    n = max(len(v) for v in dets.values())
    rows = torch.zeros(len(recs), max(n, 1), 5 + len(src.names))
    for i, r in enumerate(recs):
        for j, (b, c, *score) in enumerate(dets.get(Path(r.path).stem, [])):
            rows[i, j, :4] = torch.tensor([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2, b[2] - b[0], b[3] - b[1]])
            rows[i, j, 4], rows[i, j, 5 + c] = 1.0, score[0] if score else 0.9
    meta = [{"image_id": r.image_id, "ratio": 1.0, "pad": (0, 0), "orig": (r.height, r.width)} for r in recs]
    metric.update({"decoded": rows}, {"meta": meta})
    return metric, metric.compute()


def test_voc_difficult_is_ignored_in_evaluation(tmp_path):
    _png(tmp_path / "a.png", 100, 80)
    objs = [("cat", (11, 11, 40, 40), 0), ("cat", (51, 11, 90, 70), 1), ("dog", (11, 51, 30, 75), 0)]
    (tmp_path / "a.xml").write_text(_voc_xml(objs, 100, 80))
    src = open_detection(tmp_path, None)
    r = src.records[0]
    assert r.classes.tolist() == [0, 1] and r.ignore_classes.tolist() == [0]  # not a training target
    np.testing.assert_allclose(r.ignore_boxes, [[50, 10, 90, 70]])
    gt = to_coco_gt(src)
    assert [a["iscrowd"] for a in gt["annotations"]] == [0, 0, 1]
    assert "1 difficult boxes ignored" in src.summary("val")
    found = [([10, 10, 40, 40], 0), ([10, 50, 30, 75], 1)]
    for extra in ([], [([50, 10, 90, 70], 0)]):  # missing the difficult cat costs nothing, finding it gains nothing
        metric, m = _score(src, {"a": found + extra})
        assert m["map50"] == pytest.approx(1.0) and m["map"] == pytest.approx(1.0)
        assert metric.details["confusion"][2] == [0, 0, 0]  # and it is no false positive
    metric, m = _score(src, {"a": found + [([60, 20, 80, 40], 1, 0.95)]})  # a dog there is a false positive
    assert m["map50"] < 1.0 and metric.details["confusion"][2] == [0, 1, 0]


def test_coco_crowd_written_as_iscrowd(tmp_path):
    _png(tmp_path / "images" / "a.png", 100, 80)
    _png(tmp_path / "images" / "b.png", 100, 80)
    d = {
        "images": [
            {"id": 7, "file_name": "a.png", "width": 100, "height": 80},
            {"id": 8, "file_name": "b.png", "width": 100, "height": 90},  # not b's size: skipped
        ],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 3, "bbox": [10, 10, 30, 30], "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 3, "bbox": [50, 10, 40, 60], "iscrowd": 1},
        ],
        "categories": [{"id": 3, "name": "person"}],
    }
    js = tmp_path / "annotations" / "instances_val.json"
    js.parent.mkdir()
    js.write_text(json.dumps(d))
    src = open_detection(js, "val")
    assert [r.image_id for r in src.records] == [7] and src.skipped == {"annotation size differs from the image": 1}
    assert len(src.records[0].boxes) == 1 and len(src.records[0].ignore_boxes) == 1
    gt = to_coco_gt(src)
    assert [(a["iscrowd"], a["bbox"]) for a in gt["annotations"]] == [(0, [10, 10, 30, 30]), (1, [50, 10, 40, 60])]
    _, m = _score(src, {"a": [([10, 10, 40, 40], 0), ([55, 15, 85, 65], 0)]})  # the second inside the crowd
    assert m["map50"] == pytest.approx(1.0)
    d["categories"].append({"id": 4, "name": "person"})
    js.write_text(json.dumps(d))
    with pytest.raises(InputError, match="category name 'person' appears 2 times"):
        open_detection(js, "val")


def test_ground_truth_covers_the_scored_images():
    """An image that failed to decode is skipped, not scored as if every object in it were missed."""
    boxes = np.array([[10, 10, 40, 40]], np.float32)
    recs = [DetRecord(f"{s}.jpg", 100, 80, boxes, np.array([0])) for s in ("a", "b")]
    src = DetSource(recs, ["cat"], "t", "voc")
    metric = CocoMetric(src)
    meta = [{"image_id": recs[0].image_id, "ratio": 1.0, "pad": (0, 0), "orig": (80, 100)}]  # b never loaded
    rows = torch.tensor([[[25.0, 25, 30, 30, 1.0, 0.9]]])
    metric.update({"decoded": rows}, {"meta": meta})
    assert metric.compute()["map50"] == pytest.approx(1.0)
    assert [im["id"] for im in metric.gt["images"]] == [recs[0].image_id] and len(metric.gt["annotations"]) == 1
    assert all("bbox" in r for r in metric.results)
