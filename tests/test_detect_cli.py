"""`cspnet detect train|val|predict` end to end on coco128: the written COCO JSON pair re-scores to the printed mAP."""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from cspnet.cli import main

pytest.importorskip("cspnet.models.yolo", reason="the YOLO detectors (yolo helper) are not in this checkout yet")
from cspnet.engine.checkpoint import save_checkpoint
from cspnet.engine.tasks.detect import DetectCfg, DetectTask

TINY = {"width": 0.125}  # yolov4-tiny at 1/8 width: a few seconds a batch on a shared CPU


def run_cli(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([str(a) for a in argv]) == 0
    return out.getvalue()


def subset_yaml(tmp: Path, shared: Path, split: str, n: int) -> Path:
    """A data.yaml over the first n coco128 images of a split (a YOLO .txt image list), all 80 names."""
    images = sorted((shared / "data/coco128/images" / split).glob("*.jpg"))[:n]
    (tmp / "list.txt").write_text("\n".join(str(p) for p in images) + "\n")
    names = (shared / "data/coco128/data.yaml").read_text().split("names:", 1)[1]
    (tmp / "data.yaml").write_text(f"train: list.txt\nval: list.txt\nnames:{names}")
    return tmp / "data.yaml"


def biased_checkpoint(path: Path, names: list[str], img: int = 96) -> Path:
    """A detector that predicts, at every cell, each anchor's box as a confident class 0: deterministic output, and
    on COCO some of those boxes hit people, so the mAP is small but not zero (a non-trivial number to compare)."""
    meta = {
        "model": "yolov4-tiny",
        "num_classes": len(names),
        "classes": names,
        "category_ids": list(range(1, len(names) + 1)),
        "img": img,
        "overrides": TINY,
    }
    model = DetectTask.model_from_meta(meta)
    with torch.no_grad():
        for pred in model.head.preds:
            pred.weight.zero_()
            b = pred.bias.view(model.head.num_anchors, -1)
            b.fill_(-6.0)
            b[:, :4] = 0.0
            b[:, 4] = 3.0
            b[:, 5] = 3.0
    ckpt = {"task": "detect", "meta": meta, "args": {}, "epoch": 1, "model": model.state_dict(), "model_ema": None}
    save_checkpoint(ckpt, path)
    return path


def independent_gt(data_yaml: Path, written_gt: dict) -> dict:
    """COCO ground truth straight from the YOLO txt files (ids matched to the written file by file name)."""
    ids = {im["file_name"]: im["id"] for im in written_gt["images"]}
    images, anns = [], []
    for line in (data_yaml.parent / "list.txt").read_text().split():
        p = Path(line)
        w, h = Image.open(p).size
        images.append({"id": ids[p.name], "file_name": p.name, "width": w, "height": h})
        label = p.parents[2] / "labels" / p.parent.name / (p.stem + ".txt")
        for row in label.read_text().splitlines() if label.exists() else []:
            c, cx, cy, bw, bh = map(float, row.split())
            box = [(cx - bw / 2) * w, (cy - bh / 2) * h, bw * w, bh * h]
            anns.append(
                {"id": len(anns) + 1, "image_id": ids[p.name], "category_id": int(c) + 1, "bbox": box}
                | {"area": box[2] * box[3], "iscrowd": 0}
            )
    return {"images": images, "annotations": anns, "categories": [{"id": i + 1, "name": str(i)} for i in range(80)]}


def cocoeval(gt: dict, results_file: Path) -> np.ndarray:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(str(results_file)), "bbox")  # the file as written, as is
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def check_val_pair(data: Path, run: Path, printed: dict) -> None:
    written_gt = json.loads((run / "ground_truth.json").read_text())
    stats = cocoeval(independent_gt(data, written_gt), run / "predictions.json")
    assert printed["map50"] == pytest.approx(stats[1], abs=1e-12) and printed["map"] == pytest.approx(
        stats[0], abs=1e-12
    )
    for f in ("per_class_ap.csv", "pr_curve.png", "confusion_matrix.png"):
        assert (run / f).stat().st_size > 0


def test_val_writes_the_coco_pair_it_scored(shared, tmp_path):
    data = subset_yaml(tmp_path, shared, "val2017", 6)
    ck = biased_checkpoint(tmp_path / "w.pt", DetectTask(DetectCfg(data=str(data))).datasets()[1].names)
    common = ("--weights", ck, "--data", data, "--batch", 3, "--workers", 0, "--project", tmp_path / "runs")
    printed = json.loads(run_cli("detect", "val", *common, "--name", "j", "--json").strip().splitlines()[0])
    assert 0 < printed["map50"] < 1  # small, but not zero: the comparison below means something
    check_val_pair(data, tmp_path / "runs/j", printed)


def test_predict_images_folders_video(shared, tmp_path, monkeypatch):
    names = DetectTask(DetectCfg(data=str(shared / "data/coco128"))).datasets()[0].names
    ck = biased_checkpoint(tmp_path / "w.pt", names)
    imgs = sorted((shared / "data/coco128/images/val2017").glob("*.jpg"))[:2]
    folder = tmp_path / "folder"
    folder.mkdir()
    Image.open(imgs[1]).save(folder / "x.png")
    (folder / "bad.jpg").write_bytes(b"junk")
    cv2 = pytest.importorskip("cv2")
    video = tmp_path / "clip.avi"
    vw = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    for i in range(3):
        vw.write(np.full((48, 64, 3), 40 * i, np.uint8))
    vw.release()
    out = run_cli(
        "detect", "predict", "--weights", ck, imgs[0], folder, video, "--max-det", 3,
        "--project", tmp_path / "runs", "--name", "p",
    )  # fmt: skip
    run = tmp_path / "runs/p"
    res = json.loads((run / "predictions.json").read_text())
    assert [Path(r["source"]).name for r in res] == [imgs[0].name, "x.png", "clip.avi", "clip.avi", "clip.avi"]
    assert all(1 <= len(r["detections"]) <= 3 for r in res) and res[0]["detections"][0]["name"] == "person"
    w, h = res[0]["width"], res[0]["height"]
    assert all(
        0 <= d["box"][0] <= d["box"][2] <= w and 0 <= d["box"][1] <= d["box"][3] <= h for d in res[0]["detections"]
    )
    assert (run / f"{imgs[0].stem}.jpg").is_file() and (run / "x.jpg").is_file() and (run / "clip.mp4").is_file()
    txt = (run / "labels" / f"{imgs[0].stem}.txt").read_text().split("\n")[0].split()
    assert txt[0] == "0" and len(txt) == 6 and "skipped 1 unreadable" in out
    run_cli(
        "detect", "predict", "--weights", ck, imgs[0], "--classes", 3, "--project", tmp_path / "runs", "--name", "q"
    )
    assert json.loads((tmp_path / "runs/q/predictions.json").read_text())[0]["detections"] == []
    monkeypatch.setitem(sys.modules, "cv2", None)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["detect", "predict", "--weights", str(ck), str(video), "--project", str(tmp_path / "r2")]) == 2
    assert "video input needs OpenCV" in err.getvalue() and "cspnet[video]" in err.getvalue()


def test_close_mosaic_and_multiscale_hooks(shared, tmp_path):
    data = subset_yaml(tmp_path, shared, "train2017", 4)
    task = DetectTask(DetectCfg(data=str(data), img=64, close_mosaic=2, multi_scale=0.5))
    task._stride = 32
    trainer = SimpleNamespace(cfg=SimpleNamespace(epochs=10), main=False, start_epoch=0, save_dir=tmp_path)
    task.on_epoch_start(trainer, 7)
    assert task.datasets()[0].mosaic == 1.0
    task.on_epoch_start(trainer, 8)
    assert task.datasets()[0].mosaic == 0.0
    batch = {"images": torch.zeros(2, 3, 64, 64, dtype=torch.uint8), "targets": torch.tensor([[0, 1, 8, 8, 32, 32.0]])}
    sizes = set()
    for _ in range(20):
        b = task.preprocess(batch, True)
        s = b["images"].shape[-1]
        sizes.add(s)
        assert s % 32 == 0 and 32 <= s <= 96 and b["images"].dtype == torch.float32
        assert b["targets"][0, 2:].tolist() == [8 * s / 64, 8 * s / 64, 32 * s / 64, 32 * s / 64]
    assert len(sizes) > 1 and task.preprocess(batch, False)["images"].shape[-1] == 64


def test_auto_anchors(shared, tmp_path):
    data = subset_yaml(tmp_path, shared, "train2017", 8)
    plain = DetectTask(DetectCfg(model="yolov4-tiny", data=str(data), img=64, **TINY)).build_model()
    fitted = DetectTask(DetectCfg(model="yolov4-tiny", data=str(data), img=64, auto_anchors=True, **TINY)).build_model()
    a = fitted.head.anchors
    assert a.shape == plain.head.anchors.shape and not torch.equal(a, plain.head.anchors)
    area = a.reshape(-1, 2).prod(1)
    assert (area[1:] >= area[:-1]).all() and a.max() <= 64 * 1.01  # small to large over the levels, in 64 px images
    assert "head.anchors" in fitted.state_dict()  # saved with the weights, so a checkpoint keeps them


@pytest.mark.slow
def test_train_run_folder(shared, tmp_path):
    data = subset_yaml(tmp_path, shared, "train2017", 4)
    out = run_cli(
        "detect", "train", "--model", "yolov4-tiny", "--width", 0.125, "--data", data, "--img", 64, "--epochs", 2,
        "--batch", 2, "--workers", 0, "--close-mosaic", 1, "--project", tmp_path / "runs", "--name", "t",
    )  # fmt: skip
    run = tmp_path / "runs/t"
    assert "closing mosaic for the last 1 epoch" in out
    for f in ("results.csv", "labels.png", "train_batch.png", "loss.png", "metrics.png", "weights/last.pt"):
        assert (run / f).is_file(), f
    assert (run / "val/predictions.json").is_file() and (run / "val/ground_truth.json").is_file()
    header = (run / "results.csv").read_text().splitlines()[0]
    assert "val/map50" in header and "val/map" in header and "train/box" in header


@pytest.mark.slow
def test_overfit_16_coco128_images(shared, tmp_path):
    """Issue #10 §6: a small model trained and validated on the same 16 coco128 images reaches mAP@0.5 >= 0.5,
    and the mAP `detect val` prints is what pycocotools gets from the JSON pair it wrote (ground truth from the txt).
    About 50 s of CPU time (1 thread)."""
    data = subset_yaml(tmp_path, shared, "train2017", 16)
    run_cli(
        "detect", "train", "--model", "yolov4-tiny", "--width", 0.125, "--data", data, "--img", 160, "--epochs", 40,
        "--batch", 8, "--workers", 0, "--optimizer", "adamw", "--lr", 0.005, "--weight-decay", 0, "--warmup-epochs", 2,
        "--no-ema", "--mosaic", 0, "--close-mosaic", 0, "--scale", 0, "--translate", 0, "--fliplr", 0, "--hsv-s", 0,
        "--hsv-v", 0, "--project", tmp_path / "runs", "--name", "fit",
    )  # fmt: skip
    out = run_cli(
        "detect", "val", "--weights", tmp_path / "runs/fit/weights/last.pt", "--data", data, "--workers", 0, "--json",
        "--project", tmp_path / "runs", "--name", "val",
    )  # fmt: skip
    printed = json.loads(out.strip().splitlines()[0])
    print(f"overfit 16 coco128 images: mAP@0.5 {printed['map50']:.3f}, mAP@0.5:0.95 {printed['map']:.3f}")
    assert printed["map50"] >= 0.5
    check_val_pair(data, tmp_path / "runs/val", printed)
