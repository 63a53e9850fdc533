"""`val` and `predict` take an exported file (.onnx, OpenVINO .xml, .torchscript) as they take a checkpoint: the
same data pipeline and evaluator, so every format's accuracy is measured the same way."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import load_benchmark

from cspnet import Model
from cspnet.cli import main
from cspnet.data.sample import make_sample
from cspnet.errors import ConfigError, InputError

FORMATS = {"onnx": ".onnx", "openvino": ".xml", "torchscript": ".torchscript"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A classifier and a detector trained one epoch on the sample data, and their exports in every format."""
    root = tmp_path_factory.mktemp("exp")
    data = make_sample(root / "data")
    runs = root / "runs"
    common = ["--epochs", "1", "--batch", "16", "--workers", "0", "--project", str(runs), "--exist-ok"]
    assert main(["classify", "train", "--model", "cspresnet10", "--data", str(data / "classify"), "--img", "32", "--lr", "0.02",
                 "--name", "cls", *common]) == 0  # fmt: skip
    assert main(["detect", "train", "--model", "yolov4-tiny", "--width", "0.25", "--img", "64", "--name", "det",
                 "--data", str(data / "detect" / "data.yaml"), *common]) == 0  # fmt: skip
    out = {}
    for task in ("cls", "det"):
        best = runs / task / "weights" / "best.pt"
        out[task] = {"pt": best}
        for fmt, suffix in FORMATS.items():
            path = root / f"{task}{suffix}"
            assert main(["export", "--weights", str(best), "--format", fmt, "--out", str(path), "--runs", "0"]) == 0
            out[task][fmt] = path
    return data, out


def _val(argv, capsys) -> dict:
    capsys.readouterr()
    assert main([*argv, "--workers", "0", "--json"]) == 0
    return json.loads(next(line for line in capsys.readouterr().out.splitlines() if line.startswith("{")))


@pytest.mark.slow
def test_classify_val_and_predict_on_every_format(trained, capsys, tmp_path):
    data, files = trained
    ref = _val(["classify", "val", "--weights", str(files["cls"]["pt"]), "--data", str(data / "classify")], capsys)
    img = str(data / "classify" / "val" / "square")
    for fmt in FORMATS:
        got = _val(["classify", "val", "--weights", str(files["cls"][fmt]), "--data", str(data / "classify")], capsys)
        assert got["top1"] == ref["top1"] and got["loss"] == pytest.approx(ref["loss"], rel=1e-4, abs=1e-4), fmt
    preds = {}
    for w in ("pt", *FORMATS):
        out = tmp_path / f"{w}.json"
        assert main(["classify", "predict", "--weights", str(files["cls"][w]), img, "--json", str(out)]) == 0
        preds[w] = [r["top"][0]["class"] for r in json.loads(out.read_text())]
    assert all(p == preds["pt"] for p in preds.values())


@pytest.mark.slow
def test_detect_val_and_predict_on_every_format(trained, capsys):
    data, files = trained
    yaml = str(data / "detect" / "data.yaml")
    ref = _val(["detect", "val", "--weights", str(files["det"]["pt"]), "--data", yaml], capsys)
    for fmt in FORMATS:
        got = _val(["detect", "val", "--weights", str(files["det"][fmt]), "--data", yaml], capsys)
        assert got["map50"] == pytest.approx(ref["map50"], abs=1e-3) and got["loss"] is None, fmt  # no raw outputs
    from cspnet.engine.predict import Predictor

    one = str(data / "detect" / "images" / "val" / "val_000.jpg")
    base = Predictor.load(files["det"]["pt"], "detect", conf=0.001)(one)[0]
    for fmt in FORMATS:
        r = Predictor.load(files["det"][fmt], "detect", conf=0.001)(one)[0]
        assert torch.equal(r.classes, base.classes) and torch.allclose(r.boxes, base.boxes, atol=1e-3), fmt


@pytest.mark.slow
def test_exported_files_are_refused_where_they_cannot_go(trained, tmp_path):
    data, files = trained
    nms = tmp_path / "nms.onnx"
    assert main(["export", "--weights", str(files["det"]["pt"]), "--nms", "--out", str(nms), "--runs", "0"]) == 0
    with pytest.raises(InputError, match="exported with --nms"):
        Model(nms)
    with pytest.raises(InputError, match="exported classify model, not a detect one"):
        from cspnet.engine.checkpoint import load_model

        load_model(files["cls"]["onnx"], "detect")
    assert main(["export", "--weights", str(files["cls"]["onnx"]), "--out", str(tmp_path / "again.onnx")]) == 2
    assert not (tmp_path / "again.onnx").exists()
    m = Model(files["cls"]["onnx"])
    assert m.task == "classify" and m.names == ["circle", "square", "triangle"]
    with pytest.raises(ConfigError, match="exported file: it can val and predict, not train"):
        m.train(data=str(data / "classify"))


@pytest.mark.slow
def test_deployment_accuracy_scores_every_path_of_each_checkpoint(trained, tmp_path):
    """benchmarks/deployment_accuracy.py (the source of deployment.md's accuracy table): each checkpoint's files in
    every path scored by `val` against the checkpoint itself; fp32 files score exactly the checkpoint; the page
    summarises the paths measured on several checkpoints."""
    mods = {name: load_benchmark(name) for name in ("deployment_accuracy", "deployment")}
    data, files = trained
    last = files["cls"]["pt"].with_name("last.pt")
    out = tmp_path / "acc.json"
    argv = ["--classifier", str(files["cls"]["pt"]), "--classifier", str(last), "--cls-data", str(data / "classify"),
            "--calib", "8", "--workers", "0", "--out", str(out), "--note", "two checkpoints of one run"]  # fmt: skip
    assert mods["deployment_accuracy"].main(argv) == 0
    acc = json.loads(out.read_text())
    rows = [r for r in acc["rows"] if "value" in r]
    assert {(r["model"], r["path"]) for r in acc["rows"] if "model" in r} >= {
        (m, p) for m in ("best.pt", "last.pt") for p in ("onnxruntime:fp32", "onnxruntime:int8", "openvino:fp32")
    }
    assert all(r["value"] == r["fp32"] for r in rows if r["path"].endswith("fp32"))
    assert acc["notes"] == ["two checkpoints of one run"]
    page = "\n".join(mods["deployment"].spread_lines(acc["rows"]))
    assert "onnxruntime:fp32 top1 +0.00 (+0.00 to +0.00)" in page and "onnxruntime:int8 top1" in page


@pytest.mark.slow
def test_int8_detect_compares_the_stem_choices(trained, tmp_path):
    """benchmarks/int8_detect.py (the measurement behind float_nodes' stem): each checkpoint's fp32 mAP and, per
    runtime, the int8 file's difference with the stem quantized and kept float."""
    pytest.importorskip("nncf")
    bench = load_benchmark("int8_detect")
    data, files = trained
    out = tmp_path / "int8.json"
    argv = [str(files["det"]["pt"]), "--data", str(data / "detect" / "data.yaml"), "--calib", "8", "--out", str(out)]
    assert bench.main(argv) == 0
    res = json.loads(out.read_text())
    (row,) = res["rows"]
    keys = {f"{r}: {v}" for r in ("onnxruntime", "openvino") for v in bench.VARIANTS}
    assert keys <= set(row) and set(res["summary"]) == keys
    assert all(-1 <= row[k] <= 1 for k in keys) and 0 <= row["fp32"] <= 1
