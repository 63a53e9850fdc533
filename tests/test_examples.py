"""examples/*.py run end to end with tiny settings (end to end: slow). Each runs as `__main__` in this process,
as `python examples/X.py ARGS` would, without an interpreter start-up per script."""

from __future__ import annotations

import contextlib
import io
import os
import runpy
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run(script: str, *args: str, cwd: Path) -> str:
    path = REPO / "examples" / script
    out, old_argv, old_cwd = io.StringIO(), sys.argv, os.getcwd()
    sys.argv = [str(path), *args]
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(str(path), run_name="__main__")
    finally:
        sys.argv = old_argv
        os.chdir(old_cwd)
    return out.getvalue()


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
