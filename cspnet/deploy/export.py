"""Deployment: export to ONNX / TorchScript with a dynamic batch, validate the file, int8 through onnxruntime."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cspnet.errors import ConfigError, InputError
from cspnet.models.img_size import check_img_size, model_stride

FORMATS = ("onnx", "torchscript")
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}
OPSET = 17


def prepare(model: nn.Module, fuse: bool = True) -> nn.Module:
    """Eval mode, BatchNorm folded into the convs (the deployment graph has no BN)."""
    model.eval()
    if fuse and hasattr(model, "fuse"):
        model.fuse()
    return model


def export_onnx(model: nn.Module, path: str | Path, example: torch.Tensor, opset: int = OPSET) -> Path:
    """Write an ONNX file whose batch dimension is dynamic ("batch")."""
    path = Path(path)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer/deprecation chatter; the file is validated afterwards
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=opset,
        )
    return path


def export_torchscript(model: nn.Module, path: str | Path, example: torch.Tensor) -> Path:
    """Trace to TorchScript (tracing keeps the batch dimension free: convs and pools do not depend on it)."""
    path = Path(path)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example, check_trace=False)
    traced = torch.jit.freeze(traced)
    torch.jit.save(traced, str(path))
    return path


def ort_session(path: str | Path, threads: int | None = None):
    """An onnxruntime CPU session, all graph optimisations on."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def load_runner(path: str | Path, fmt: str, threads: int | None = None):
    """A callable (torch batch -> numpy logits) backed by the exported file alone."""
    if fmt == "onnx":
        sess = ort_session(path, threads)
        name = sess.get_inputs()[0].name
        return lambda x: sess.run(None, {name: x.numpy()})[0]
    module = torch.jit.load(str(path))

    def run(x: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return module(x).numpy()

    return run


def export(
    model: nn.Module,
    path: str | Path,
    fmt: str = "onnx",
    img_size: int = 224,
    batch: int = 2,
    check_batch: int = 3,
    atol: float = 1e-4,
    runs: int = 10,
    fuse: bool = True,
) -> dict:
    """Export, then reload the file, compare with PyTorch at another batch size and time both.

    Raises InputError when the outputs differ by more than `atol` x max(1, max |PyTorch output|).
    """
    from cspnet.bench.measure import summarize, time_interleaved

    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    check_img_size(img_size, model_stride(model))
    model = prepare(model, fuse)
    in_chans = getattr(model, "in_chans", 3)
    example = torch.randn(batch, in_chans, img_size, img_size)
    path = Path(path)
    if path.is_dir():
        raise InputError(f"export output {str(path)!r} is a folder; pass a file path")
    path.parent.mkdir(parents=True, exist_ok=True)
    # written under a temporary name and renamed only once it passed the check: a file that failed is never kept
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        (export_onnx if fmt == "onnx" else export_torchscript)(model, tmp, example)
        run = load_runner(tmp, fmt, torch.get_num_threads())
        x = torch.randn(check_batch, in_chans, img_size, img_size)  # a batch size the export never saw
        with torch.inference_mode():
            ref = model(x)
        out = torch.from_numpy(np.asarray(run(x)))
        if out.shape != ref.shape:
            raise InputError(
                f"exported {fmt} model returned shape {tuple(out.shape)}, PyTorch {tuple(ref.shape)}; nothing written"
            )
        max_diff = float((out - ref).abs().max())
        scale = max(1.0, float(ref.abs().max()))  # tolerance relative to the logits' scale once they exceed 1
        if not max_diff <= atol * scale:
            raise InputError(
                f"exported {fmt} model differs from PyTorch by {max_diff:.2e} > {atol:g} x output scale {scale:.3g}; "
                f"not written to {path} (do not deploy it)"
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    report = {
        "path": str(path),
        "format": fmt,
        "img_size": img_size,
        "check_batch": check_batch,
        "max_abs_diff": max_diff,
        "output_scale": scale,
        "atol": atol,
        "size_mb": path.stat().st_size / 1e6,
    }
    if runs:
        x1 = x[:1]
        with torch.inference_mode():
            times = time_interleaved({"pytorch": lambda: model(x1), fmt: lambda: run(x1)}, runs=runs, warmup=2)
        report["latency_ms_batch1"] = {k: summarize(v)["median_ms"] for k, v in times.items()}
    return report


def calibration_reader(images: torch.Tensor, input_name: str = "images", batch: int = 8):
    """onnxruntime CalibrationDataReader over a tensor of preprocessed images."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(images.split(batch))

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {input_name: x.numpy()}

    return _Reader()


def quantize_onnx_int8(fp32_path: str | Path, int8_path: str | Path, calib: torch.Tensor) -> Path:
    """Static int8 post-training quantization with onnxruntime's quantizer (QDQ, per-channel weights)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if calib.dim() != 4 or len(calib) == 0:
        raise InputError(f"calibration images must be a non-empty (N, C, H, W) batch, got {tuple(calib.shape)}")
    fp32_path, int8_path = Path(fp32_path), Path(int8_path)
    pre = int8_path.with_suffix(".pre.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre),
            str(int8_path),
            calibration_reader(calib),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    pre.unlink(missing_ok=True)
    return int8_path
