"""benchmarks/finetune_darknet.py at the test's budget: a random darknet partial file, fine-tuned and scored, recorded
as JSON + markdown that say the weights were random."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import load_benchmark

from cspnet import hub


def _benchmark():
    return load_benchmark("finetune_darknet")


@pytest.mark.slow
def test_tiny_finetune_from_a_random_darknet_partial_file(tmp_path):
    out = tmp_path / "doc" / "ft.md"
    assert _benchmark().main(["--tiny", "--project", str(tmp_path / "runs"), "--out", str(out)]) == 0
    r = json.loads(out.with_suffix(".json").read_text())
    w = r["weights"]
    assert r["random_weights"] is True and w["random"] is True and r["label"].startswith("RANDOM")
    assert w["file"] == "random-yolov4-tiny.conv.29" and w["layers"] == 29
    file = tmp_path / "runs" / "random" / w["file"]
    assert w["sha256"] == hub.sha256_of(file) and w["bytes"] == file.stat().st_size
    for key in ("map50", "map", "train_wall_s", "machine", "load_before", "load_after", "commands", "data"):
        assert key in r, key
    assert 0 <= r["map"] <= r["map50"] <= 1
    assert (r["epochs"], r["img"], r["width"], r["data"]["subset"]) == (1, 64, 0.25, 4)
    assert r["data"]["train"].startswith("train: 48 images") and r["data"]["val"].startswith("val: 16 images")
    assert r["commands"]["train"].startswith("cspnet detect train --model yolov4-tiny --weights ")
    assert f"--weights {file}" in r["commands"]["train"] and r["commands"]["val"].startswith("cspnet detect val")
    # the training log: the partial file's first 29 layers went in, the rest stayed fresh
    log = Path(r["logs"]["train"]).read_text()
    assert "random-yolov4-tiny.conv.29: loaded darknet layers 0-28" in log
    assert w["loaded"] and "loaded darknet layers 0-28" in w["loaded"][0]
    md = out.read_text()
    assert "RANDOM weights" in md and "**The weights were random.**" in md
    assert "yolov4-tiny.conv.29" in md and hub.WEIGHTS["yolov4-tiny.conv.29"].url in md
    assert "not verified yet" in md and "sha256 of the file is printed" in md
    # the .md again from the recorded .json alone: the same text
    assert _benchmark().main(["--from-json", str(out.with_suffix(".json")), "--out", str(tmp_path / "ft.md")]) == 0
    assert (tmp_path / "ft.md").read_text() == md


def test_weights_or_random_is_required(capsys):
    with pytest.raises(SystemExit):
        _benchmark().parse([])
    assert "--random-darknet" in capsys.readouterr().err
