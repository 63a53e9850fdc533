"""One image-size rule: train, val, predict and export (CLI and Python) refuse a size off the stride in one line."""

from __future__ import annotations

import contextlib
import io

import pytest
import torch
from PIL import Image

import cspnet
from cspnet.cli import main
from cspnet.engine.checkpoint import save_checkpoint
from cspnet.errors import ConfigError
from cspnet.models import check_img_size, create_model, model_stride
from cspnet.models.img_size import stride_of

MSG = "--img 300 is not a multiple of the model's stride 32; use 288 or 320"
META = {"model": "yolov4-tiny", "num_classes": 2, "classes": ["a", "b"], "img": 64, "overrides": {"width": 0.125}}


def test_the_rule():
    assert check_img_size(320, 32) == 320 and check_img_size(33, 1) == 33
    with pytest.raises(ConfigError, match=f"^{MSG}$"):
        check_img_size(300, 32)
    with pytest.raises(ConfigError, match="^--img 20 is not a multiple of the model's stride 32; use 32$"):
        check_img_size(20, 32)
    with pytest.raises(ConfigError, match="must be a positive number of pixels"):
        check_img_size(0, 32)
    assert model_stride(create_model("yolov4-tiny", width=0.125)) == 32 == stride_of("yolov4-csp")
    assert model_stride(create_model("resnet10")) == 1 == stride_of("cspresnet50")  # global pooling: any size


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from cspnet.engine.tasks.detect import DetectTask

    tmp = tmp_path_factory.mktemp("img_size")
    sd = DetectTask.model_from_meta(META).state_dict()
    save_checkpoint({"task": "detect", "meta": META, "args": {}, "model": sd, "model_ema": None}, tmp / "det.pt")
    Image.new("RGB", (40, 30), (9, 99, 199)).save(tmp / "x.png")
    return tmp


def error_line(argv: list) -> str:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        assert main([str(a) for a in argv]) == 2
    return err.getvalue().strip()


def test_every_command_says_the_same(files):
    ck, img, runs = files / "det.pt", files / "x.png", files / "runs"
    argvs = [
        ["detect", "train", "--model", "yolov4-tiny", "--data", files / "nodata", "--img", 300, "--project", runs],
        ["detect", "val", "--weights", ck, "--data", files / "nodata", "--img", 300, "--project", runs],
        ["detect", "predict", "--weights", ck, img, "--img", 300, "--project", runs],
        ["export", "--weights", ck, "--img", 300, "--out", files / "m.onnx"],
        ["export", "--model", "yolov4-tiny", "--img", 300, "--out", files / "m.onnx"],
    ]
    for argv in argvs:
        assert error_line(argv) == f"cspnet: error: {MSG}", argv
    assert not runs.exists() or not any(runs.rglob("*.pt"))  # refused before any run folder kept a file


def test_the_python_api_says_the_same(files):
    model = cspnet.Model(files / "det.pt")
    for call in (
        lambda: model.val(files / "nodata", img=300),
        lambda: model.predict(files / "x.png", img=300),
        lambda: model.export("onnx", files / "m.onnx", img=300),
        lambda: cspnet.Model("yolov4-tiny").train(data=files / "nodata", img=300, project=files / "runs2"),
    ):
        with pytest.raises(ConfigError, match=f"^{MSG}$"):
            call()


def test_classifiers_take_any_size(tmp_path, make_folder):
    data = make_folder(tmp_path / "data", n=2, size=40)
    meta = {"model": "resnet10", "num_classes": 2, "classes": ["a", "b"], "img": 32, "overrides": {}}
    sd = create_model("resnet10", num_classes=2).state_dict()
    save_checkpoint({"task": "classify", "meta": meta, "args": {}, "model": sd, "model_ema": None}, tmp_path / "c.pt")
    model = cspnet.Model(tmp_path / "c.pt")
    assert model.val(data, img=33, workers=0)["skipped"] == 0
    assert model.predict(data / "val", img=33)[0].scores.shape == (2,)
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["classify", "predict", "--weights", str(tmp_path / "c.pt"), str(data / "val"), "--img", "33"]) == 0
    assert torch.is_tensor(model.predict(torch.zeros(3, 33, 33), img=33)[0].scores)
