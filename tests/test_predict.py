"""cspnet.engine.predict.Predictor: sources, batches, the fused model, boxes in the original pixels, results."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cspnet.cli import main
from cspnet.engine.checkpoint import save_checkpoint
from cspnet.engine.predict import Predictor, Result, list_sources
from cspnet.engine.tasks.detect import DetectTask
from cspnet.errors import ConfigError, InputError

NAMES = ["cat", "dog", "bird"]
META = {"model": "yolov4-tiny", "num_classes": 3, "classes": NAMES, "img": 96, "overrides": {"width": 0.125}}


@torch.no_grad()
def busy_detector() -> nn.Module:
    """yolov4-tiny at 1/8 width with BN statistics that are not the identity (so fusing folds something) and an
    objectness prior of 0.5: a few detections per image that depend on the pixels."""
    from cspnet.nn.bn import calibrate_bn

    torch.manual_seed(0)
    model = DetectTask.model_from_meta(META)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0.0, 0.2)
    calibrate_bn(model, torch.rand(4, 3, 96, 96))
    for pred in model.head.preds:
        pred.bias.view(model.head.num_anchors, -1)[:, 4] = 0.0
    return model.eval()


def images(n: int = 5) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randint(0, 256, (3, 50 + 10 * i, 80 - 5 * i), dtype=torch.uint8, generator=g) for i in range(n)]


def same(a: list[Result], b: list[Result], atol: float = 1e-3) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.classes.tolist() == y.classes.tolist()
        torch.testing.assert_close(x.boxes, y.boxes, atol=atol, rtol=0)
        torch.testing.assert_close(x.scores, y.scores, atol=1e-4, rtol=0)


def test_fused_by_default_and_same_boxes_as_unfused():
    model = busy_detector()
    fused, plain = Predictor(model, META, conf=0.2), Predictor(model, META, conf=0.2, fuse=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.model.modules())  # BN folded away
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the caller's model is not changed
    a, b = fused(images()), plain(images())
    assert sum(len(r) for r in a) >= 10  # enough boxes for the comparison to mean something
    same(a, b)


def test_batched_equals_one_by_one():
    model = busy_detector()
    one = Predictor(model, META, conf=0.2, batch=1)(images())
    three = Predictor(model, META, conf=0.2, batch=3)(images())  # 3 + 2: a short last batch
    same(one, three)


class CentreBox(nn.Module):
    """A fake detector: one class-0 box around the non-padding pixels of each letterboxed input."""

    stride = 32
    num_classes = 2

    def __init__(self):
        super().__init__()
        self.head = SimpleNamespace(decode_boxes=None)  # what makes it a detector to the Predictor
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = []
        for im in x:
            content = (im - 114 / 255).abs().amax(0) > 0.1
            ys, xs = content.any(1).nonzero()[:, 0], content.any(0).nonzero()[:, 0]
            x1, x2, y1, y2 = float(xs[0]), float(xs[-1] + 1), float(ys[0]), float(ys[-1] + 1)
            rows.append([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, 1.0, 0.9, 0.1])
        return torch.tensor(rows)[:, None]  # (B, 1, 5 + C), as a detector in eval mode


@pytest.mark.parametrize("hw", [(60, 100), (100, 60), (64, 64), (300, 20)])
def test_boxes_come_back_in_the_original_pixels(hw):
    h, w = hw
    white = torch.full((3, h, w), 255, dtype=torch.uint8)
    (r,) = Predictor(CentreBox(), {"classes": ["a", "b"]}, img=64, fuse=False)(white)
    assert r.shape == (h, w) and r.labels == ["a"]
    atol = max(h, w) / 64 + 0.5  # a letterboxed pixel, mapped back
    torch.testing.assert_close(r.boxes[0], torch.tensor([0.0, 0.0, w, h]), atol=atol, rtol=0)
    cx, cy, bw, bh = map(float, r.yolo_txt().split()[1:5])  # normalised by the original size
    assert abs(cx * w - w / 2) <= atol and abs(cy * h - h / 2) <= atol and bw * w >= w - atol and bh * h >= h - atol


def test_classes_checked_against_the_model():
    pred = Predictor(CentreBox(), {"classes": ["a", "b"]}, img=64, classes=[1])
    assert len(pred(torch.zeros(3, 32, 32))[0]) == 0  # the only box is class 0
    with pytest.raises(ConfigError, match=r"^--classes 99: the model has 2 classes \(0-1\)$"):
        Predictor(CentreBox(), {"classes": ["a", "b"]}, img=64, classes=[0, 99])


def test_sources_files_folders_globs_and_memory(tmp_path):
    model = busy_detector()
    arrays = [im.permute(1, 2, 0).numpy() for im in images(3)]
    (tmp_path / "f" / "sub").mkdir(parents=True)
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(tmp_path / "f" / ("sub" if i == 2 else "") / f"{i}.png")  # PNG: lossless
    (tmp_path / "f" / "notes.txt").write_text("not an image")
    (tmp_path / "f" / "bad.png").write_bytes(b"junk")
    pred = Predictor(model, META, conf=0.2, batch=2)
    by_path = pred([tmp_path / "f" / "0.png", str(tmp_path / "f"), str(tmp_path / "f" / "*.png")])
    names = [Path(r.path).name for r in by_path]
    assert names == ["0.png", "0.png", "1.png", "2.png", "0.png", "1.png"] and pred.skipped == 2  # bad.png twice
    memory = [
        Image.fromarray(arrays[0]),
        arrays[1],
        torch.from_numpy(arrays[2]).permute(2, 0, 1).float() / 255,  # float in [0, 1]
    ]
    got = pred(memory)
    assert [r.path for r in got] == [None] * 3
    same(got, [by_path[0], by_path[2], by_path[3]], atol=1e-4)  # the same pixels give the same boxes
    nchw = torch.stack([torch.from_numpy(a[:50, :70]).permute(2, 0, 1) for a in arrays])
    assert [r.shape for r in pred(nchw)] == [(50, 70)] * 3
    with pytest.raises(InputError, match="not found; pass image files, folders, globs or video files"):
        list_sources([tmp_path / "nope.jpg"])
    with pytest.raises(InputError, match="matches no files"):
        list_sources(str(tmp_path / "*.webp"))
    with pytest.raises(InputError, match=r"must be \(H, W, 3\) RGB or \(H, W\) gray"):
        pred(np.zeros((4, 4, 5), np.uint8))


def test_video_frames_batched(tmp_path):
    cv2 = pytest.importorskip("cv2")
    video = tmp_path / "clip.avi"
    vw = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    for i in range(5):
        vw.write(np.full((48, 64, 3), 40 * i, np.uint8))
    vw.release()
    results = Predictor(busy_detector(), META, conf=0.01, batch=2)([video, images(1)[0]])
    assert [(r.path, r.frame) for r in results] == [(str(video), i) for i in range(5)] + [(None, None)]
    assert all(r.shape == (48, 64) for r in results[:5])


def test_result_records_txt_and_drawing(tmp_path):
    (r,) = Predictor(busy_detector(), META, conf=0.2)(images(1))
    d = r.to_dict()
    assert d["width"] == 80 and d["height"] == 50 and len(d["detections"]) == len(r) > 0
    assert d["detections"][0]["name"] == NAMES[d["detections"][0]["class"]]
    assert len(r.save_txt(tmp_path / "a.txt").read_text().splitlines()) == len(r)
    drawn = r.draw()
    assert drawn.shape == r.image.shape and not torch.equal(drawn, r.image)
    assert Image.open(r.save(tmp_path / "a.jpg")).size == (80, 50)


def test_classifier_topk_equals_the_validation_transform(tmp_path, make_folder):
    from cspnet.data import eval_transform, load_image
    from cspnet.models import create_model

    data = make_folder(tmp_path / "d", n=2, size=20)
    model = create_model("resnet10", num_classes=2).eval()
    meta = {"model": "resnet10", "num_classes": 2, "classes": ["a", "b"], "img": 16, "overrides": {}}
    results = Predictor(model, meta, topk=5, batch=3)(data / "val")
    files = sorted((data / "val").rglob("*.jpg"))
    assert [r.path for r in results] == [str(f) for f in files] and all(r.boxes is None for r in results)
    x = torch.stack([eval_transform(16)(load_image(f)) for f in files])
    with torch.no_grad():
        ref = model(x).softmax(1)
    for r, p in zip(results, ref):
        assert r.labels == [meta["classes"][i] for i in p.argsort(descending=True).tolist()]  # top-k of 2: both
        torch.testing.assert_close(r.scores, p.sort(descending=True).values, atol=1e-4, rtol=0)
    assert r.to_dict()["top"][0]["class"] == r.labels[0] and r.summary().startswith(r.labels[0])


def test_cli_classes_and_batch_flags(tmp_path):
    ck = tmp_path / "w.pt"
    model = busy_detector()
    save_checkpoint({"task": "detect", "meta": META, "args": {}, "model": model.state_dict(), "model_ema": None}, ck)
    for i, im in enumerate(images(3)):
        Image.fromarray(im.permute(1, 2, 0).numpy()).save(tmp_path / f"{i}.png")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["detect", "predict", "--weights", str(ck), str(tmp_path / "0.png"), "--classes", "99"]) == 2
    assert "--classes 99: the model has 3 classes (0-2)" in err.getvalue()
    runs = []
    for extra in (["--batch", "2"], ["--no-fuse"]):
        name = f"r{len(runs)}"
        argv = ["detect", "predict", "--weights", str(ck), str(tmp_path / "*.png"), "--conf", "0.2", *extra]
        with contextlib.redirect_stdout(io.StringIO()):
            assert main([*argv, "--project", str(tmp_path / "runs"), "--name", name]) == 0
        runs.append(json.loads((tmp_path / "runs" / name / "predictions.json").read_text()))
    assert [r["source"] for r in runs[0]] == [str(tmp_path / f"{i}.png") for i in range(3)]
    for a, b in zip(*runs):  # batched + fused == one by one, unfused
        assert [d["class"] for d in a["detections"]] == [d["class"] for d in b["detections"]]
        np.testing.assert_allclose([d["box"] for d in a["detections"]], [d["box"] for d in b["detections"]], atol=0.02)
    assert (tmp_path / "runs/r0/labels/0.txt").is_file() and (tmp_path / "runs/r0/0.jpg").is_file()
