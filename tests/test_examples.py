"""examples/*.py run end to end with tiny settings (subprocesses: slow)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run(script: str, *args: str, cwd: Path) -> str:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    r = subprocess.run(
        [sys.executable, str(REPO / "examples" / script), *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_examples_are_short():
    for f in (REPO / "examples").glob("*.py"):
        assert len(f.read_text().splitlines()) < 60, f"{f.name} should stay under 60 lines"


def test_finetune_classifier(tmp_path, make_folder):
    data = make_folder(tmp_path / "data", n=4, size=16)
    out = run(
        "finetune_classifier.py",
        *("--data", str(data), "--model", "cspresnet10", "--img", "16", "--epochs", "1", "--batch", "4"),
        *("--workers", "0", "--out", str(tmp_path / "run")),
        cwd=tmp_path,
    )
    assert (tmp_path / "run" / "weights" / "best.pt").is_file()
    assert "val/top1" in out and out.count("val image") == 4


def test_fasterrcnn_backbone(tmp_path, shared):
    data = shared / "data" / "raccoon"
    out = run(
        "fasterrcnn_backbone.py",
        *("--data", str(data), "--model", "cspresnet10", "--img", "64", "--steps", "2", "--limit", "3"),
        cwd=tmp_path,
    )
    assert "step 1: loss" in out and "detections in all" in out


def test_darknet_predict(tmp_path, darknet_dir, shared):
    image = next((shared / "data" / "raccoon" / "images").glob("*.jpg"))
    out = run(
        "darknet_predict.py",
        *("--cfg", str(darknet_dir / "yolov4-tiny.cfg"), "--images", str(image), "--img", "128"),
        cwd=tmp_path,
    )
    assert "-> YoloDetector" in out and (tmp_path / "converted.safetensors").is_file()
    assert (tmp_path / f"pred_{image.stem}.jpg").is_file() and " detections" in out.strip().splitlines()[-1]
