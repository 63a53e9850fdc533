"""cspnet.Model: train / val / predict / export from Python run the code of the commands and agree with them."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cspnet
from cspnet.cli import main
from cspnet.errors import ConfigError

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit's deprecation notes


def cli(*argv) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert main([str(a) for a in argv]) == 0
    return out.getvalue()


def boxes_set(root: Path, n: int = 4) -> Path:
    """A YOLO dataset: n black images, each with a white rectangle labelled `box`."""
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(n):
            h, w = 48 + 8 * i, 64
            img = np.zeros((h, w, 3), np.uint8)
            x1, x2, y1, y2 = 12 + i, 40, 10, 30 + i
            img[y1:y2, x1:x2] = 255
            Image.fromarray(img).save(root / "images" / split / f"{i}.png")
            label = f"0 {(x1 + x2) / 2 / w} {(y1 + y2) / 2 / h} {(x2 - x1) / w} {(y2 - y1) / h}\n"
            (root / "labels" / split / f"{i}.txt").write_text(label)
    (root / "data.yaml").write_text("train: images/train\nval: images/val\nnames: [box]\n")
    return root / "data.yaml"


def test_classifier_train_val_predict_export(tmp_path, make_folder):
    data = make_folder(tmp_path / "data", n=4, size=16)
    model = cspnet.Model("resnet10")
    assert model.task == "classify" and model.weights is None
    metrics = model.train(data=data, epochs=1, batch=4, img=16, workers=0, project=tmp_path / "runs", name="a")
    best = tmp_path / "runs/a/weights/best.pt"
    assert "val/top1" in metrics and model.weights == best and model.names == ["a", "b"]
    # val: the numbers of `classify val` on the same weights
    got = model.val(data, workers=0, batch=4)
    printed = json.loads(cli("classify", "val", "--weights", best, "--data", data, "--workers", 0, "--json"))
    assert got["top1"] == printed["top1"] and got["loss"] == pytest.approx(printed["loss"], rel=1e-6)
    # predict: the records `classify predict --json` writes
    results = model.predict(data / "val")
    cli("classify", "predict", "--weights", best, data / "val", "--json", tmp_path / "p.json")
    assert [r.to_dict() for r in results] == json.loads((tmp_path / "p.json").read_text())
    report = model.export("torchscript", tmp_path / "m.pt")
    assert report["checked"] and report["errors"]["logits"] <= 1e-4 and (tmp_path / "m.pt").is_file()
    again = cspnet.Model(best)  # a checkpoint: its architecture and classes come with it
    assert again.task == "classify" and again.names == ["a", "b"]


@pytest.mark.slow  # trains twice (about 10 s)
def test_detector_train_val_predict(tmp_path):
    data = boxes_set(tmp_path / "d")
    model = cspnet.Model("yolov4-tiny", width=0.125)
    assert model.task == "detect" and model.meta["overrides"] == {"width": 0.125}
    common = {"batch": 2, "img": 64, "workers": 0, "mosaic": 0.0, "warmup_epochs": 0.0}
    metrics = model.train(data=data, epochs=1, project=tmp_path / "runs", name="a", **common)
    assert "val/map50" in metrics and model.meta["overrides"] == {"width": 0.125} and model.names == ["box"]
    got = model.val(data, workers=0, batch=2, conf=0.001)
    printed = json.loads(
        cli("detect", "val", "--weights", model.weights, "--data", data, "--workers", 0, "--batch", 2, "--json",
            "--project", tmp_path / "runs", "--name", "v").splitlines()[0]
    )  # fmt: skip
    assert got["map50"] == printed["map50"] and got["map"] == printed["map"]
    images = sorted((tmp_path / "d/images/val").glob("*.png"))
    results = model.predict(images, conf=0.0001, save=True, project=tmp_path / "runs", name="p")
    assert [r.path for r in results] == [str(p) for p in images] and all(r.boxes is not None for r in results)
    saved = json.loads((tmp_path / "runs/p/predictions.json").read_text())
    assert saved == [r.to_dict() for r in results] and (tmp_path / "runs/p/labels/0.txt").is_file()
    # a fine-tune from the trained checkpoint keeps its architecture
    model.train(data=data, epochs=1, project=tmp_path / "runs", name="b", **common)
    assert model.weights == tmp_path / "runs/b/weights/best.pt" and model.meta["overrides"] == {"width": 0.125}
    streamed = model.predict(images[0], stream=True, conf=0.0001)
    assert not isinstance(streamed, list) and len(list(streamed)) == 1


def test_bad_options_are_one_line_errors(tmp_path, make_folder):
    model = cspnet.Model("resnet10")
    with pytest.raises(ConfigError, match="unknown classify train option epoch; known: "):
        model.train(data=tmp_path, epoch=3)
    with pytest.raises(ConfigError, match="cannot rebuild the override act"):
        cspnet.Model("resnet10", act="mish").train(data=tmp_path)
    with pytest.raises(ConfigError, match="unknown model 'nosuchnet'"):
        cspnet.Model("nosuchnet")
    ck = tmp_path / "w.pt"
    torch.save({"x": 1}, ck)
    with pytest.raises(ConfigError, match="records its architecture; drop width"):
        cspnet.Model(ck, width=0.5)
