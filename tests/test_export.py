"""Export parity: ONNX (run by onnxruntime) and TorchScript (reloaded) match PyTorch on every zoo family."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import randomized, smallest_per_family

from cspnet.cli import main
from cspnet.deploy.export import export, load_runner, quantize_onnx_int8
from cspnet.errors import ConfigError, InputError

pytestmark = pytest.mark.slow  # ONNX / subprocesses / end-to-end

pytest.importorskip("onnxruntime")
IMG = 32


@pytest.mark.parametrize("name", smallest_per_family(csp=True) + smallest_per_family(csp=False))
def test_onnx_export_matches_pytorch_with_dynamic_batch(name, tmp_path):
    model = randomized(name)
    x = torch.randn(3, 3, IMG, IMG)
    with torch.no_grad():
        ref = model(x)
    report = export(model, tmp_path / f"{name}.onnx", "onnx", img_size=IMG, batch=2, check_batch=3)
    assert report["checked"] and report["errors"]["logits"] <= 1e-4
    out = torch.from_numpy(load_runner(report["path"], "onnx")(x))  # batch 3: the export saw batch 2
    assert float((out - ref).abs().max()) <= 1e-4 * max(1.0, float(ref.abs().max()))


def test_torchscript_export_reloads_and_matches(tmp_path):
    model = randomized("cspdarknet53")
    report = export(model, tmp_path / "m.pt", "torchscript", img_size=IMG)  # .pt: still read as TorchScript
    assert report["checked"] and report["errors"]["logits"] <= 1e-4
    x = torch.randn(5, 3, IMG, IMG)
    assert load_runner(report["path"], "torchscript")(x).shape == (5, 10)


def test_export_rejects_bad_format_and_mismatch(tmp_path):
    model = randomized("cspresnet10")
    with pytest.raises(ConfigError, match="unknown export format"):
        export(model, tmp_path / "m.x", "tflite")
    with pytest.raises(InputError, match="differs from PyTorch.*not written"):
        export(model, tmp_path / "m.onnx", "onnx", img_size=IMG, atol=0.0)
    assert list(tmp_path.iterdir()) == []  # the file that failed its check is not kept, nor a temp file


def test_failed_export_keeps_the_old_file(tmp_path):
    (tmp_path / "m.pt").write_text("previous export")
    with pytest.raises(InputError, match="differs from PyTorch"):
        export(randomized("cspresnet10"), tmp_path / "m.pt", "torchscript", img_size=IMG, atol=0.0)
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"] and (tmp_path / "m.pt").read_text() == "previous export"


def test_int8_quantization_runs_and_mostly_agrees(tmp_path):
    model = randomized("cspresnet10")
    fp32 = export(model, tmp_path / "m.onnx", "onnx", img_size=IMG)["path"]
    calib = torch.randn(16, 3, IMG, IMG)
    int8 = quantize_onnx_int8(fp32, tmp_path / "m.int8.onnx", calib)
    assert int8.stat().st_size < 0.5 * (tmp_path / "m.onnx").stat().st_size  # int8 weights
    x = calib[:8]
    a = torch.from_numpy(load_runner(fp32, "onnx")(x))
    b = torch.from_numpy(load_runner(int8, "onnx")(x))
    assert b.shape == a.shape
    assert float((a - b).abs().max()) < 0.5 * float(a.abs().max())  # quantized, not broken
    with pytest.raises(InputError, match="calibration images"):
        quantize_onnx_int8(fp32, tmp_path / "x.onnx", torch.randn(3, IMG, IMG))


def test_export_cli(tmp_path, capsys):
    out = tmp_path / "c.onnx"
    assert main(["export", "--model", "cspresnet10", "--img", str(IMG), "--runs", "0", "--out", str(out)]) == 0
    line = capsys.readouterr().out
    assert out.is_file() and "vs PyTorch at batch 3: logits" in line and "outputs logits" in line
    from cspnet.models.weights import save_state_dict

    w = save_state_dict(randomized("cspresnet10").state_dict(), tmp_path / "w.safetensors")
    assert main(["export", "--weights", str(w)]) == 2  # a bare state dict does not say its architecture
    assert "--model" in capsys.readouterr().err
    assert main(["export", "--weights", str(out), "--model", "cspresnet10"]) == 2
    assert "is already an exported onnx file" in capsys.readouterr().err  # export from its checkpoint


def test_export_builds_the_model_from_the_checkpoint(tmp_path, capsys):
    """Issue #9 defect 4: small_input and the class count come from the checkpoint's meta, not from --model."""
    from cspnet.engine.checkpoint import save_checkpoint
    from cspnet.models import create_model

    trained = create_model("cspresnet10", num_classes=7, small_input=True)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    meta = {"model": "cspresnet10", "num_classes": 7, "classes": list("abcdefg"), "img": IMG}
    meta["overrides"] = {"small_input": True}
    ckpt = tmp_path / "last.pt"
    save_checkpoint({"model": trained.state_dict(), "model_ema": None, "meta": meta, "task": "classify"}, ckpt)
    out = tmp_path / "m.onnx"
    argv = ["export", "--model", "cspresnet10", "--weights", str(ckpt), "--runs", "0", "--out", str(out), "--json"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["img_size"] == IMG  # the training size by default
    x = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad():
        ref = trained.eval()(x)
    got = torch.from_numpy(load_runner(out, "onnx")(x))
    assert float((got - ref).abs().max()) <= 1e-4 * max(1.0, float(ref.abs().max()))
    assert main(argv[:1] + ["--model", "resnet10"] + argv[3:] + ["--force"]) == 2
    assert "was trained as cspresnet10, not resnet10" in capsys.readouterr().err


def test_detector_is_checked_on_inputs_in_its_domain(tmp_path):
    """A detector takes images in [0, 1]: export traces and checks it on such noise, not on N(0, 1), which overflows a
    trained head's exp() box decoding (a plateau-trained yolov4-darknet53-s gave inf and could not be exported)."""
    import cspnet

    model = cspnet.create_model("yolov4-tiny", width=0.25, num_classes=2).eval()
    seen = []

    def record(_, args):
        x = args[0]
        if isinstance(x, torch.Tensor) and type(x) is torch.Tensor and not torch.jit.is_tracing():
            seen.append((float(x.min()), float(x.max())))

    model.register_forward_pre_hook(record)
    export(model, tmp_path / "det.onnx", "onnx", 64)
    assert seen and all(lo >= 0 and hi <= 1 for lo, hi in seen), seen
