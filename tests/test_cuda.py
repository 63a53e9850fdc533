"""CUDA paths: the same models and the same engine on a GPU. Skipped without one (CI has none; run on a lent GPU)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from cspnet.models import create_model
from cspnet.nn.bn import calibrate_bn

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on a lent GPU machine)")
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def _folder(root: Path, n: int = 16, size: int = 32) -> Path:
    """root/{train,val}/{a,b}/*.png, two separable colours."""
    for split in ("train", "val"):
        for ci, c in enumerate("ab"):
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.new("RGB", (size, size), (220 * ci, 40 + 5 * i, 120)).save(d / f"{i}.png")
    return root


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


@pytest.mark.parametrize("name", ["cspresnet50", "cspdarknet53", "csppeleenet", "resnet50"])
def test_cuda_output_equals_cpu(name):
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    model = create_model(name, num_classes=10)
    x = torch.randn(2, 3, 96, 96)
    calibrate_bn(model, x)
    model.eval()
    with torch.no_grad():
        ref = model(x)
        got = model.cuda()(x.cuda()).cpu()
    assert _rel(got, ref) < 1e-4


def test_fused_model_on_cuda_equals_unfused():
    torch.backends.cudnn.allow_tf32 = False
    model = create_model("cspresnext50", num_classes=10)
    x = torch.randn(2, 3, 96, 96)
    calibrate_bn(model, x)
    model = model.eval().cuda()
    with torch.no_grad():
        ref = model(x.cuda())
        got = model.fuse()(x.cuda())
    assert _rel(got, ref) < 1e-4


@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_classify_train_and_val_on_cuda_with_amp(tmp_path, amp):
    data = _folder(tmp_path / "data")
    cmd = [sys.executable, "-m", "cspnet.cli", "classify", "train", "--model", "cspresnet10", "--data", str(data)]
    cmd += ["--img", "32", "--small-input", "--epochs", "3", "--batch", "8", "--lr", "0.05", "--workers", "2"]
    cmd += ["--device", "cuda", "--amp", amp, "--project", str(tmp_path / "runs"), "--name", amp]
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = list(csv.DictReader((tmp_path / "runs" / amp / "results.csv").open()))
    assert len(rows) == 3 and all(float(r["train/loss"]) == float(r["train/loss"]) for r in rows)  # finite
    best = tmp_path / "runs" / amp / "weights" / "best.pt"
    val = [sys.executable, "-m", "cspnet.cli", "classify", "val", "--weights", str(best), "--data", str(data)]
    r = subprocess.run([*val, "--device", "cuda", "--amp", amp], env=ENV, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]


def test_torchrun_sync_bn_nccl(tmp_path):
    data = _folder(tmp_path / "data")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m", "cspnet.cli"]
    cmd += ["classify", "train", "--model", "resnet10", "--data", str(data), "--img", "32", "--epochs", "1"]
    cmd += [
        "--batch",
        "8",
        "--workers",
        "1",
        "--device",
        "cuda",
        "--sync-bn",
        "--project",
        str(tmp_path),
        "--name",
        "ddp",
    ]
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "ddp" / "weights" / "last.pt").is_file()


def test_predictor_on_cuda_gives_the_cpu_boxes():
    from cspnet.engine.predict import Predictor
    from cspnet.engine.tasks.detect import DetectTask

    torch.backends.cudnn.allow_tf32 = False
    meta = {"model": "yolov4-tiny", "num_classes": 3, "classes": list("abc"), "img": 96, "overrides": {"width": 0.25}}
    model = DetectTask.model_from_meta(meta)
    calibrate_bn(model, torch.rand(4, 3, 96, 96))
    with torch.no_grad():
        for pred in model.head.preds:
            pred.bias.view(model.head.num_anchors, -1)[:, 4] = 0.0  # objectness 0.5: some boxes to compare
    images = [torch.randint(0, 256, (3, 60 + 9 * i, 90), dtype=torch.uint8) for i in range(4)]
    cpu = Predictor(model, meta, conf=0.2, fuse=False, device="cpu")(images)
    gpu = Predictor(model, meta, conf=0.2, batch=3, device="cuda")(images)  # fused, batched
    assert sum(len(r) for r in cpu) > 0
    for a, b in zip(cpu, gpu):
        assert a.classes.tolist() == b.classes.tolist() and b.boxes.device.type == "cpu"
        torch.testing.assert_close(a.boxes, b.boxes, atol=1e-2, rtol=0)
