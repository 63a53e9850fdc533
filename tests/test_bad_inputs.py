"""Bad input -> exit code and one error line, for every sub-command's numeric and path arguments.

The table runs the CLI in-process (cspnet.cli.main). To add a case, append a row to ROWS:
    (argv, expected exit code, fragment of the error line)
argv items may use the placeholders of `paths()`: {file} an existing file, {dir} an existing folder, {missing} a
path that does not exist, {cfg} a tiny darknet cfg, {weights} its .weights, {data} a tiny image folder (train/val,
2 classes), {ckpt} a `classify` checkpoint of resnet10, {pickle_st} a pickle named .safetensors, {tmp} the folder.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cspnet.cli import main

TINY_CFG = """[net]
width=16
height=16
channels=3

[convolutional]
batch_normalize=1
filters=4
size=3
stride=2
pad=1
activation=leaky

[avgpool]
"""

NUM = "must be a positive integer"
IMG = "image size must be a positive"

ROWS: list[tuple[list[str], int, str]] = [
    # top level
    (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
    # models
    (["models", "--measure", "nosuchmodel*"], 0, ""),  # an empty filter is not an error
    # compare
    (["compare", "resnet10", "cspresnet10", "--batch", "0"], 2, NUM),
    (["compare", "resnet10", "cspresnet10", "--batch", "-2"], 2, NUM),
    (["compare", "resnet10", "cspresnet10", "--batch", "two"], 2, "expected a positive integer"),
    (["compare", "resnet10", "cspresnet10", "--runs", "0"], 2, NUM),
    (["compare", "resnet10", "cspresnet10", "--warmup", "-1"], 2, "must be an integer >= 0"),
    (["compare", "resnet10", "cspresnet10", "--img", "0"], 2, IMG),
    (["compare", "resnet10", "cspresnet10", "--img", "-32"], 2, IMG),
    (["compare", "resnet10", "cspresnet10", "--threads", "0"], 2, NUM),
    (["compare", "resnet10", "cspresnet5"], 2, "did you mean cspresnet50"),
    (["compare", "yolov4-tiny", "yolov4-tiny", "--img", "100"], 2, "not a multiple of the stride 32"),
    # bench
    (["bench", "resnet10", "--batch", "1", "0"], 2, NUM),
    (["bench", "resnet10", "--img", "0"], 2, IMG),
    (["bench", "resnet10", "--runs", "0"], 2, NUM),
    (["bench", "resnet10", "--warmup", "-1"], 2, "must be an integer >= 0"),
    (["bench", "resnet10", "--threads", "-1"], 2, NUM),
    (["bench", "resnet10", "--out", "{dir}"], 2, "exists; pass --force"),
    (["bench", "resnet10", "--out", "{file}"], 2, "is a file; pass a folder"),
    (["bench", "resnet10", "--out", "{file}/sub"], 2, "is a file, not a folder"),
    (["bench", "resnet10", "--out", "{file}", "--force"], 2, "is a file; pass a folder"),
    (["bench", "resnet10@warp"], 2, "unknown option"),
    (["bench", "resnet10", "--dtype", "int4"], 2, "unknown dtype"),
    (["bench", "yolov4-tiny", "--img", "100", "--no-memory"], 2, "not a multiple of the stride 32"),
    # export
    (["export", "--model", "resnet10", "--img", "0"], 2, IMG),
    (["export", "--model", "resnet10", "--img", "-5"], 2, IMG),
    (["export", "--model", "resnet10", "--runs", "-1"], 2, "must be an integer >= 0"),
    (["export", "--model", "resnet10", "--atol", "0"], 2, "must be a number > 0"),
    (["export", "--model", "resnet10", "--atol", "nan"], 2, "expected a positive number"),
    (["export", "--model", "resnet10", "--override", "depth"], 2, "expected KEY=VALUE"),
    (["export", "--model", "resnet10", "--weights", "{missing}"], 2, "not found"),
    (["export", "--model", "resnet10", "--weights", "{dir}"], 2, "is a folder"),
    (["export", "--model", "resnet10", "--out", "{file}"], 2, "exists; pass --force"),
    (["export", "--model", "resnet10", "--out", "{dir}"], 2, "is a folder; pass a file"),
    (["export", "--model", "resnet10", "--out", "{dir}", "--force"], 2, "is a folder; pass a file"),
    (["export", "--weights", "{file}"], 2, "cannot read"),
    (["export", "--weights", "{pickle_st}"], 2, "--weights needs --model NAME"),  # a torch file, whatever its name
    (["export", "--model", "nosuch"], 2, "unknown model"),
    (
        ["export", "--model", "yolov4-tiny", "--img", "100"],
        2,
        "--img 100 is not a multiple of the model's stride 32; use 96 or 128",
    ),
    # darknet info / convert
    (["darknet", "info", "{missing}"], 2, "not found"),
    (["darknet", "info", "{dir}"], 2, "is a folder"),
    (["darknet", "info", "{cfg}", "--img", "0"], 2, IMG),
    (["darknet", "info", "{file}"], 2, "before any [section]; start the file with [net]"),
    (["darknet", "convert", "{cfg}", "{missing}", "{tmp}/o.safetensors"], 2, "not found"),
    (["darknet", "convert", "{missing}", "{weights}", "{tmp}/o.safetensors"], 2, "not found"),
    (["darknet", "convert", "{cfg}", "{weights}", "{file}"], 2, "exists; pass --force"),
    (["darknet", "convert", "{cfg}", "{weights}", "{cfg}"], 2, "is also the input cfg"),
    (["darknet", "convert", "{cfg}", "{weights}", "{cfg}", "--force"], 2, "is also the input cfg"),
    (["darknet", "convert", "{cfg}", "{weights}", "{weights}", "--force"], 2, "is also the input weights"),
    (["darknet", "convert", "{cfg}", "{weights}", "{dir}"], 2, "is a folder; pass a file"),
    (["darknet", "convert", "{cfg}", "{file}", "{tmp}/o.safetensors"], 2, "too short for a darknet header"),
    # classify train (engine): numbers at parse time, paths before any training
    *[
        (["classify", "train", "--model", "resnet10", "--data", "{data}", flag, value], 2, frag)
        for flag, value, frag in [
            ("--img", "0", IMG),
            ("--img", "-3", IMG),
            ("--epochs", "0", NUM),
            ("--batch", "0", NUM),
            ("--accumulate", "0", NUM),
            ("--subset", "0", NUM),
            ("--val-subset", "-1", NUM),
            ("--workers", "-1", "must be an integer >= 0"),
            ("--lr", "0", "must be a number > 0"),
            ("--lr", "-1", "must be a number > 0"),
            ("--weight-decay", "-1", "must be a number >= 0"),
            ("--warmup-epochs", "-1", "must be a number >= 0"),
            ("--mixup", "-1", "must be a number >= 0"),
            ("--cutmix", "-1", "must be a number >= 0"),
            ("--momentum", "1.5", "must be in [0, 1]"),
            ("--min-lr", "2", "must be in [0, 1]"),
            ("--ema-decay", "1.5", "must be in [0, 1]"),
            ("--scale", "1.5", "must be in [0, 1]"),
            ("--label-smoothing", "1.5", "must be in [0, 1]"),
            ("--project", "{file}", "is a file"),
        ]
    ],
    (["classify", "train", "--model", "resnet10", "--data", "{missing}"], 2, "not found"),
    (["classify", "train", "--model", "resnet10", "--data", "{file}"], 2, "has no 'train' split"),
    (["classify", "train", "--resume", "{missing}"], 2, "not found"),
    (
        ["classify", "train", "--model", "resnet10", "--data", "{data}", "--weights", "{pickle_st}"]
        + ["--project", "{tmp}/runs", "--batch", "2", "--img", "8", "--workers", "0", "--epochs", "1"],
        2,
        "holds none of the model's tensors",
    ),
    # classify val / predict (engine)
    (["classify", "val", "--weights", "{ckpt}", "--data", "{data}", "--batch", "0"], 2, NUM),
    (["classify", "val", "--weights", "{ckpt}", "--data", "{data}", "--img", "0"], 2, IMG),
    (["classify", "val", "--weights", "{ckpt}", "--data", "{data}", "--workers", "-1"], 2, "must be an integer >= 0"),
    (
        ["classify", "val", "--weights", "{ckpt}", "--data", "{data}", "--confusion", "{file}"],
        2,
        "exists; pass --force",
    ),
    (["classify", "val", "--weights", "{ckpt}", "--data", "{missing}"], 2, "not found"),
    (["classify", "val", "--weights", "{ckpt}", "--data", "{data}", "--split", "nosuch"], 2, "no 'nosuch' split"),
    (["classify", "val", "--weights", "{missing}", "--data", "{data}"], 2, "not found"),
    (["classify", "val", "--weights", "{file}", "--data", "{data}"], 2, "cannot read"),
    (["classify", "predict", "--weights", "{ckpt}", "{file}", "--topk", "0"], 2, NUM),
    (["classify", "predict", "--weights", "{ckpt}", "{file}", "--topk", "-1"], 2, NUM),
    (["classify", "predict", "--weights", "{ckpt}", "{file}", "--img", "0"], 2, IMG),
    (["classify", "predict", "--weights", "{ckpt}", "{file}", "--json", "{file}"], 2, "exists; pass --force"),
    (["classify", "predict", "--weights", "{missing}", "{file}"], 2, "not found"),
    # export of a training checkpoint: its meta decides the architecture
    (["export", "--weights", "{ckpt}", "--model", "cspresnet10"], 2, "was trained as resnet10, not cspresnet10"),
    (["export", "--weights", "{ckpt}", "--override", "act=mish"], 2, "drop --override"),
    # detect train / val / predict
    *[
        (["detect", "train", "--model", "yolov4-tiny", "--data", "{data}", flag, value], 2, frag)
        for flag, value, frag in [
            ("--img", "0", IMG),
            ("--img", "-32", IMG),
            ("--img", "100", "--img 100 is not a multiple of the model's stride 32; use 96 or 128"),
            ("--epochs", "0", NUM),
            ("--batch", "0", NUM),
            ("--subset", "0", NUM),
            ("--close-mosaic", "-1", "must be an integer >= 0"),
            ("--lr", "0", "must be a number > 0"),
            ("--width", "0", "must be a number > 0"),
            ("--depth", "-1", "must be a number > 0"),
            ("--degrees", "-5", "must be a number >= 0"),
            ("--mosaic", "1.5", "must be in [0, 1]"),
            ("--translate", "2", "must be in [0, 1]"),
            ("--fliplr", "1.5", "must be in [0, 1]"),
            ("--iou-thresh", "1.5", "must be in [0, 1]"),
            ("--conf", "2", "must be in [0, 1]"),
            ("--iou", "1.5", "must be in [0, 1]"),
            ("--project", "{file}", "is a file"),
        ]
    ],
    (["detect", "train", "--model", "yolov4-tiny", "--data", "{missing}"], 2, "not found"),
    (["detect", "train", "--model", "yolov4-tiny", "--data", "{data}"], 2, "no data.yaml, COCO .json, VOC devkit"),
    (["detect", "val", "--weights", "{ckpt}", "--data", "{data}", "--img", "0"], 2, IMG),
    (["detect", "val", "--weights", "{ckpt}", "--data", "{data}", "--batch", "0"], 2, NUM),
    (["detect", "val", "--weights", "{ckpt}", "--data", "{data}", "--max-det", "0"], 2, NUM),
    (["detect", "val", "--weights", "{ckpt}", "--data", "{data}", "--conf", "2"], 2, "must be in [0, 1]"),
    (["detect", "val", "--weights", "{ckpt}", "--data", "{data}", "--iou", "-1"], 2, "must be in [0, 1]"),
    (["detect", "val", "--weights", "{ckpt}", "--data", "{data}", "--workers", "-1"], 2, "must be an integer >= 0"),
    (["detect", "val", "--weights", "{ckpt}", "--data", "{data}"], 2, "is not a detect checkpoint"),
    (["detect", "val", "--weights", "{missing}", "--data", "{data}"], 2, "not found"),
    (["detect", "predict", "--weights", "{ckpt}", "{file}", "--img", "0"], 2, IMG),
    (["detect", "predict", "--weights", "{ckpt}", "{file}", "--conf", "-1"], 2, "must be in [0, 1]"),
    (["detect", "predict", "--weights", "{ckpt}", "{file}", "--max-det", "0"], 2, NUM),
    (["detect", "predict", "--weights", "{ckpt}", "{file}"], 2, "is not a detect checkpoint"),
    (["detect", "predict", "--weights", "{missing}", "{file}"], 2, "not found"),
    # ablate
    *[
        (["ablate", "--base", "resnet10", "--data", "{data}", flag, value], 2, NUM)
        for flag, value in [("--seeds", "0"), ("--jobs", "0"), ("--epochs", "0"), ("--img", "0"), ("--batch", "0")]
        + [("--threads", "0"), ("--latency-runs", "0")]
    ],
    (["ablate", "--base", "resnet10", "--data", "{missing}"], 2, "not found"),
    (["ablate", "--base", "nosuch", "--data", "{data}"], 2, "unknown model 'nosuch'"),
    (["ablate", "--base", "resnet10", "--data", "{data}", "--grid", "bogus"], 2, "bad grid entry 'bogus'"),
    (["ablate", "--base", "resnet10", "--data", "{data}", "--lr", "0"], 2, "must be a number > 0"),
    (["ablate", "--base", "resnet10", "--data", "{data}", "--subset", "-1"], 2, "must be an integer >= 0"),
    (["ablate", "--base", "resnet10", "--data", "{data}", "--workers", "-1"], 2, "must be an integer >= 0"),
    (["ablate", "--base", "resnet10", "--data", "{data}", "--project", "{file}"], 2, "is a file; pass a folder"),
]


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("bad_inputs")
    (tmp / "exists.txt").write_text("hello\n")
    (tmp / "folder").mkdir()
    (tmp / "tiny.cfg").write_text(TINY_CFG)
    from cspnet.interop.darknet import DarknetModel
    from cspnet.interop.darknet.weights import write_weights

    write_weights(DarknetModel.from_cfg(tmp / "tiny.cfg"), tmp / "tiny.weights")
    torch.save({"x": torch.zeros(1)}, tmp / "pickle.safetensors")
    from conftest import _make_folder

    from cspnet.engine.checkpoint import save_checkpoint
    from cspnet.models import create_model

    _make_folder(tmp / "data")
    meta = {"model": "resnet10", "num_classes": 2, "classes": ["a", "b"], "img": 8, "overrides": {}}
    sd = create_model("resnet10", num_classes=2).state_dict()
    save_checkpoint({"model": sd, "model_ema": None, "task": "classify", "meta": meta}, tmp / "last.pt")
    return {
        "data": str(tmp / "data"),
        "ckpt": str(tmp / "last.pt"),
        "file": str(tmp / "exists.txt"),
        "dir": str(tmp / "folder"),
        "missing": str(tmp / "missing.bin"),
        "cfg": str(tmp / "tiny.cfg"),
        "weights": str(tmp / "tiny.weights"),
        "pickle_st": str(tmp / "pickle.safetensors"),
        "tmp": str(tmp),
    }


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of cspnet.cli.main in this process."""
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def check_one_line_error(rc: int, out: str, err: str, code: int, fragment: str) -> None:
    assert "Traceback" not in out + err
    assert rc == code, (rc, err)
    if code:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("cspnet: error: "), err
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("argv, code, fragment", ROWS, ids=[" ".join(r[0]) for r in ROWS])
def test_bad_input(argv, code, fragment, paths, capsys):
    before = files(paths["tmp"])
    rc, out, err = run_cli([a.format(**paths) for a in argv], capsys)
    check_one_line_error(rc, out, err, code, fragment)
    assert files(paths["tmp"]) == before  # a refused command writes no file and changes none


def files(root: str) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in Path(root).rglob("*") if p.is_file()}


def test_unexpected_error_is_one_line_and_debug_shows_the_traceback(monkeypatch, capsys):
    import cspnet.cli as cli

    def boom(args):
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(cli, "_cmd_models", boom)
    rc, out, err = run_cli(["models"], capsys)
    assert rc == 1 and "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert (
        line == "cspnet: error: unexpected RuntimeError: disk on fire second line (run with --debug for the traceback)"
    )
    rc, out, err = run_cli(["models", "--debug"], capsys)
    assert rc == 1 and "Traceback" in err and 'raise RuntimeError("disk on fire' in err


def test_cspnet_error_with_debug_shows_the_traceback(capsys):
    rc, out, err = run_cli(["--debug", "compare", "resnet10", "nosuch"], capsys)
    assert rc == 2 and "Traceback" in err and err.strip().splitlines()[-1].startswith("cspnet: error: unknown model")


@pytest.mark.slow
def test_end_to_end_bad_inputs_in_a_subprocess(tmp_path):
    """The installed entry point: argparse and runtime errors are one line, exit 2, no traceback."""
    (tmp_path / "o").mkdir()
    argv = ["bench", "resnet10", "--out", str(tmp_path / "o")]
    proc = subprocess.run([sys.executable, "-m", "cspnet.cli", *argv], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("cspnet: error: ") and "exists; pass --force" in line


def test_argument_types():
    import argparse

    from cspnet.cli_args import fraction, key_value

    assert key_value("stage_depths=[1, 2]") == ("stage_depths", [1, 2]) and key_value("act=mish") == ("act", "mish")
    assert fraction("0") == 0.0 and fraction("1") == 1.0
    for fn, bad, msg in [
        (fraction, "1.5", "in [0, 1]"),
    ]:
        with pytest.raises(argparse.ArgumentTypeError, match=re.escape(msg)):
            fn(bad)


def test_output_into_a_closed_pipe_is_not_an_error(monkeypatch, capsys):
    """`cspnet models | head -1`: the reader leaves early; no error line, exit 0."""
    import cspnet.cli as cli

    def write_into_closed_pipe(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, "_cmd_models", write_into_closed_pipe)
    assert run_cli(["models"], capsys) == (0, "", "")
