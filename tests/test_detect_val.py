"""`detect val` counts and val/loss (issue 19), and one-class scoring (issue 17): on tiny synthetic data and a
1/8-width yolov4-tiny at 64 px."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cspnet import create_model
from cspnet.cli import main
from cspnet.data.boxes import postprocess
from cspnet.engine.checkpoint import save_checkpoint
from cspnet.engine.tasks.detect import DetectTask
from cspnet.engine.tasks.detect_loss import LossCfg, YoloLoss

TINY = {"width": 0.125}


def run_cli(*argv) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([str(a) for a in argv]) == 0
    return out.getvalue()


def dataset(root: Path) -> Path:
    """10 images: 7 good (one a background), 1 with a class id >= nc, 1 unreadable, 1 that fails to decode."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(8):
        a = rng.integers(0, 80, (48 + 4 * i, 64, 3), dtype=np.uint8)
        a[8:30, 10 + i : 40] = 230
        Image.fromarray(a).save(root / f"images/{i}.png")
        if i:
            rows = [f"{i % 3} 0.4 0.4 0.45 0.45", "0 0.8 0.8 0.2 0.2"] + (["7 0.5 0.5 0.1 0.1"] if i == 7 else [])
            (root / f"labels/{i}.txt").write_text("\n".join(rows) + "\n")
    (root / "images/bad.jpg").write_bytes(b"not an image")
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(root / "images/cut.jpg")
    data = (root / "images/cut.jpg").read_bytes()
    (root / "images/cut.jpg").write_bytes(data[: len(data) // 3])  # header fine, pixels cut off
    (root / "labels/cut.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (root / "data.yaml").write_text("train: images\nval: images\nnames: [a, b, c]\n")
    return root / "data.yaml"


def checkpoint(path: Path, names: list[str]) -> Path:
    meta = {"model": "yolov4-tiny", "num_classes": len(names), "classes": names, "category_ids": [1, 2, 3]}
    meta |= {"img": 64, "overrides": TINY}
    torch.manual_seed(0)
    model = DetectTask.model_from_meta(meta)
    with torch.no_grad():  # some confident boxes, so the loss has every part
        for p in model.head.preds:
            p.bias.view(model.head.num_anchors, -1)[:, 4] = 0.0
    ckpt = {"task": "detect", "meta": meta, "args": {}, "epoch": 1, "model": model.state_dict(), "model_ema": None}
    save_checkpoint(ckpt, path)
    return path


def test_val_counts_skipped_images_and_loss_ignores_the_batch(tmp_path):
    data = dataset(tmp_path / "d")
    ck = checkpoint(tmp_path / "w.pt", ["a", "b", "c"])
    common = ("detect", "val", "--weights", ck, "--data", data, "--workers", 0, "--project", tmp_path / "runs")
    out = run_cli(*common, "--batch", 3, "--name", "text")
    assert "val: 8 of 10 images, 13 boxes, 3 classes; 2 skipped (1 corrupt image, 1 label with class 7 >= nc 3)" in out
    assert "(10 images: 7 scored, 3 skipped)" in out  # 2 when read, 1 when decoded
    gt = json.loads((tmp_path / "runs/text/ground_truth.json").read_text())
    assert len(gt["images"]) == 7  # the image that failed to decode is not scored as missed
    losses = []
    for batch in (1, 3, 8):
        r = json.loads(run_cli(*common, "--batch", batch, "--name", f"b{batch}", "--json").splitlines()[0])
        assert (r["images"], r["scored"], r["skipped"]) == (10, 7, 3) and "8 of 10 images" in r["data"]
        losses.append(r["loss"])
    assert losses[0] > 0 and losses[1] == pytest.approx(losses[0], rel=1e-5) == losses[2]


# ---- the loss's normalisation -------------------------------------------------------------------------------------------
def raw_and_targets(nc: int, bs: int = 3):
    model = create_model("yolov4-tiny", num_classes=nc, **TINY).eval()
    with torch.no_grad():
        raw = model.forward_raw(torch.rand(bs, 3, 64, 64))
    targets = torch.tensor([[0, 0, 4, 4, 30, 40.0], [0, nc - 1, 30, 30, 60, 50], [2, 0, 10, 20, 20, 36]])
    return model.head, raw, targets


def test_training_gradient_is_yolov5s_loss_times_batch():
    head, raw, targets = raw_and_targets(3)
    loss_fn = YoloLoss(head, LossCfg())
    a = [r.clone().requires_grad_() for r in raw]
    loss, parts = loss_fn(a, targets)
    loss.backward()
    assert loss.item() == pytest.approx(sum(v.item() for v in parts.values()), rel=1e-6)  # logged: per image
    b = [r.clone().requires_grad_() for r in raw]
    (sum(loss_fn.parts(b, targets)) * 3).backward()  # the gradient training always had
    for ga, gb in zip(a, b):
        torch.testing.assert_close(ga.grad, gb.grad)
    # validation: each image alone, averaged
    alone = []
    for i in range(3):
        t = targets[targets[:, 0] == i].clone()
        t[:, 0] = 0
        alone.append(loss_fn([r[i : i + 1] for r in raw], t)[0])
    val, _ = loss_fn.per_image(raw, targets)
    assert val.item() == pytest.approx(torch.stack(alone).mean().item(), rel=1e-6)


# ---- one class: the score is the objectness ----------------------------------------------------------------------------
def test_one_class_scores_by_objectness_and_trains_no_class_logit():
    head, raw, targets = raw_and_targets(1)
    a = [r.clone().requires_grad_() for r in raw]
    loss, parts = YoloLoss(head, LossCfg())(a, targets)
    loss.backward()
    assert parts["cls"] == 0 and all(r.grad[..., 5].abs().max() == 0 for r in a)  # the class logit: no gradient
    assert all(r.grad[..., 4].abs().max() > 0 for r in a)
    for r in raw:
        r[..., 5] = -3.0  # an untrained class logit must not scale the scores
    dec = head.decode(raw, (64, 64))
    assert (dec[..., 5] == 1).all()
    torch.testing.assert_close(
        dec[..., 4], torch.cat([r[..., 4].sigmoid().permute(0, 2, 3, 1).flatten(1) for r in raw], 1)
    )
    det = postprocess(dec, conf=0.0, iou=0.5, max_det=5)[0]
    assert torch.isin(det[:, 4], dec[0, :, 4]).all() and det[0, 4] == dec[0, :, 4].max()  # score = objectness
    head.one_class_logit = True  # a darknet model: objectness x class probability, as darknet scores it
    torch.testing.assert_close(
        head.decode(raw, (64, 64))[..., 5], torch.full_like(dec[..., 5], torch.tensor(-3.0).sigmoid().item())
    )
    many, raw3, _ = raw_and_targets(3)
    torch.testing.assert_close(
        many.decode(raw3, (64, 64))[..., 5:],
        torch.cat([r[..., 5:].sigmoid().permute(0, 2, 3, 1, 4).flatten(1, 3) for r in raw3], 1),
    )  # several classes: unchanged


def test_one_class_darknet_model_keeps_darknet_scores(darknet_dir, tmp_path):
    """A darknet cfg with classes=1 maps onto the native detector and still computes what darknet does."""
    from cspnet import from_darknet
    from cspnet.interop.darknet.native import darknet_boxes
    from cspnet.interop.darknet.weights import random_weights

    text = (darknet_dir / "yolov4-tiny.cfg").read_text().replace("classes=80", "classes=1")
    cfg = tmp_path / "yolov4-tiny.cfg"
    cfg.write_text(text.replace("filters=255", "filters=18"))
    dk, weights = random_weights(cfg, tmp_path / "one.weights")
    native = from_darknet(cfg, weights)
    assert native.num_classes == 1 and native.head.one_class_logit
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out, ref = native(x), darknet_boxes(dk, x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-4)
    assert (out[..., 5] < 0.999).any()  # the class probability is in the score, as darknet's
