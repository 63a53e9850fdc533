"""Deployment: `export(model, path, fmt)` writes ONNX, OpenVINO IR or TorchScript, in fp32, fp16, bf16 or int8, a
detector optionally with NMS inside, then reloads the file (cspnet.deploy.runtime) and checks it against PyTorch.

Every file has a dynamic batch, named outputs ("logits"; "predictions", or "boxes", "scores", "classes" with NMS)
and the metadata the runtime wrapper reads. What each runtime can run on a CPU:

| format | fp16 | bf16 | int8 |
|---|---|---|---|
| onnx (onnxruntime) | fp16 graph, fp32 in/out | refused: no bf16 CPU kernels | QDQ, onnxruntime's quantizer |
| openvino | fp16 weights (computed in f32 without fp16 hardware) | inference precision bf16 | NNCF |
| torchscript | convs in fp16 | convs in bf16 | refused |

A detector's box decoding stays fp32 at every precision (exp(t) x anchor overflows fp16; an int8 step on a box
logit moves the box by pixels): the nodes after its last convolutions are excluded from fp16 conversion and from
quantization, and TorchScript decodes in fp32 (LowPrecision).

Why two int8 quantizers: each runtime fuses quantize/dequantize pairs into int8 kernels only where they sit in the
patterns it knows. onnxruntime's quantize_static writes the QDQ layout its CPU kernels fuse (QLinearConv, ...) and
needs nothing beyond onnxruntime; NNCF (`nncf.quantize`, OpenVINO's own) writes the FakeQuantize layout OpenVINO's
low-precision transformations turn into int8 kernels, with fast bias correction. One tool for both would hand one
runtime a layout made for the other. Both calibrate on the same preprocessed images (`--data`).
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cspnet.deploy.nms import OUTPUTS as NMS_OUTPUTS
from cspnet.deploy.nms import DetectWithNMS
from cspnet.deploy.onnx_export import export_onnx, ort_session, quantize_onnx_int8, set_metadata, to_fp16
from cspnet.deploy.runtime import EXTRA_FILE, SUFFIXES, load_exported
from cspnet.errors import ConfigError, InputError
from cspnet.models.img_size import check_img_size, model_stride
from cspnet.models.yolo import YoloDetector

FORMATS = ("onnx", "openvino", "torchscript")
SUFFIX = {"onnx": ".onnx", "openvino": ".xml", "torchscript": ".torchscript"}
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "int8": torch.float32}
REFUSED = {
    ("onnx", "bf16"): "onnxruntime has no bfloat16 CPU kernels; use --format openvino --bf16 (or torchscript)",
    ("torchscript", "int8"): "--int8 needs --format onnx (onnxruntime's quantizer) or openvino (NNCF)",
}
# the largest difference from fp32 PyTorch each precision may show, in the units of `compare`; int8 has no bound
# here (its accuracy is measured with `val` on the file)
ATOL = {"fp32": 1e-4, "fp16": 5e-2, "bf16": 0.25, "int8": None}


__all__ = ["FORMATS", "SUFFIX", "export", "export_onnx", "load_runner", "ort_session", "prepare", "quantize_onnx_int8"]


def prepare(model: nn.Module, fuse: bool = True) -> nn.Module:
    """Eval mode, BatchNorm folded into the convs (the deployment graph has no BN)."""
    model.eval()
    if fuse and hasattr(model, "fuse"):
        model.fuse()
    return model


def task_of(model: nn.Module) -> str:
    return "detect" if isinstance(model, YoloDetector) else "classify"


def describe(model: nn.Module, img_size: int, precision: str, nms: dict | None, meta: dict | None) -> dict:
    """The metadata stored in the file: what the runtime wrapper and `val`/`predict` need to use it."""
    meta = dict(meta or {})
    task = task_of(model)
    out = {
        "task": task,
        "model": meta.get("model"),
        "img_size": img_size,
        "in_chans": getattr(model, "in_chans", 3),
        "num_classes": int(model.num_classes),
        "classes": meta.get("classes"),
        "precision": precision,
        "outputs": list(NMS_OUTPUTS if nms else ["predictions"] if task == "detect" else ["logits"]),
        "nms": nms,
    }
    if task == "detect":
        out["stride"] = int(model.stride)
        out["preprocess"] = "letterbox, RGB, /255"
    else:
        out["preprocess"] = "resize, centre crop, RGB, /255, ImageNet mean/std"
    return out


class LowPrecision(nn.Module):
    """A model computed in fp16/bf16 that takes and returns fp32. A detector decodes its boxes in fp32: exp(t) x
    anchor overflows fp16, and bf16 keeps 3 significant digits of a pixel coordinate."""

    def __init__(self, graph: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.graph, self.dtype = copy.deepcopy(graph).to(dtype), dtype
        self.nms = self.graph if isinstance(self.graph, DetectWithNMS) else None
        self.detector = self.nms.model if self.nms is not None else self.graph
        if isinstance(self.detector, YoloDetector):
            self.detector.head.anchors = self.detector.head.anchors.float()

    def forward(self, x: torch.Tensor):
        x = x.to(self.dtype)
        if not isinstance(self.detector, YoloDetector):
            return self.graph(x).float()
        raws = self.detector.forward_raw(x)
        pred = self.detector.head.decode([r.float() for r in raws], (x.shape[2], x.shape[3]))
        return self.nms.select(pred) if self.nms is not None else pred


def export_torchscript(model: nn.Module, path: str | Path, example: torch.Tensor, meta: dict | None = None) -> Path:
    """Trace to TorchScript (tracing keeps the batch dimension free: convs and pools do not depend on it)."""
    path = Path(path)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings, and TorchScript's deprecation notice
        traced = torch.jit.freeze(torch.jit.trace(model, example, check_trace=False))
        torch.jit.save(traced, str(path), _extra_files={EXTRA_FILE: json.dumps(meta or {})})
    return path


def _write(graph: nn.Module, tmp: Path, fmt: str, example: torch.Tensor, meta: dict, calib: torch.Tensor | None):
    """The file in `fmt` at meta['precision'], under the temporary name `tmp`; returns the files written."""
    precision, keep_tail = meta["precision"], meta["task"] == "detect"
    if fmt == "torchscript":
        dtype = DTYPES[precision]
        model = graph if dtype == torch.float32 else LowPrecision(graph, dtype).eval()
        return [export_torchscript(model, tmp, example, meta)]
    onnx32 = tmp.with_name(tmp.stem + ".fp32.onnx")
    try:
        export_onnx(graph, onnx32, example, output_names=meta["outputs"])
        if fmt == "openvino":
            from cspnet.deploy.openvino_export import to_openvino

            to_openvino(onnx32, tmp, meta, precision, calib, keep_tail)
            return [tmp, tmp.with_suffix(".bin")]
        if precision == "int8":
            quantize_onnx_int8(onnx32, tmp, calib, detector=keep_tail)
        elif precision == "fp16":
            to_fp16(onnx32, tmp, keep_tail)
        else:
            os.replace(onnx32, tmp)
        set_metadata(tmp, meta)
        return [tmp]
    finally:
        onnx32.unlink(missing_ok=True)


def relative_error(out: torch.Tensor, ref: torch.Tensor, floor: float) -> float:
    """max |out - ref| / max(floor, |ref|), element by element: a large output does not loosen the others."""
    if out.numel() == 0:
        return 0.0
    return float(((out.float() - ref.float()).abs() / ref.float().abs().clamp(min=floor)).max())


def compare(outs: tuple, refs: tuple, names: list[str], img_size: int) -> dict[str, float]:
    """Error of each output against PyTorch, each in its own unit: box coordinates relative to max(image size,
    |value|), probabilities absolute, logits relative to max(1, their largest |value|), classes as the share of
    slots that differ. No output's scale loosens another's check."""
    err: dict[str, float] = {}
    for name, o, r in zip(names, outs, refs):
        if name == "predictions":  # cx, cy, w, h in pixels, then objectness and class probabilities
            err["boxes"] = relative_error(o[..., :4], r[..., :4], img_size)
            err["scores"] = relative_error(o[..., 4:], r[..., 4:], 1.0)
        elif name == "boxes":
            err["boxes"] = relative_error(o, r, img_size)
        elif name == "classes":
            err["classes"] = float((o != r).float().mean()) if o.numel() else 0.0
        else:  # logits: their error grows with their scale, so the scale of the whole output is the unit
            err[name] = relative_error(o, r, max(1.0, float(r.abs().max())) if r.numel() else 1.0)
    return err


def _check(args: tuple) -> None:
    fmt, precision, task, nms, calib = args
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if (fmt, precision) in REFUSED:
        raise ConfigError(f"{precision} with --format {fmt}: {REFUSED[fmt, precision]}")
    if precision == "int8" and calib is None:
        raise ConfigError("--int8 needs calibration images: pass --data with images like the ones it will see")
    if nms and task != "detect":
        raise ConfigError("--nms is for detectors; a classifier's output is its logits")
    if fmt == "openvino" and precision == "bf16":
        from cspnet.deploy.openvino_export import cpu_capabilities

        if "BF16" not in cpu_capabilities():
            raise ConfigError("--bf16: this CPU has no bf16 arithmetic (AVX-512 BF16 or AMX); OpenVINO would run f32")


def export(
    model: nn.Module,
    path: str | Path,
    fmt: str = "onnx",
    img_size: int = 224,
    precision: str = "fp32",
    calib: torch.Tensor | None = None,
    nms: dict | None = None,
    meta: dict | None = None,
    batch: int = 2,
    check_batch: int = 3,
    atol: float | None = None,
    fuse: bool = True,
) -> dict:
    """Export, reload the file through cspnet.deploy.runtime, and compare it with PyTorch (fp32) at a batch size the
    export never saw. Returns a report; raises InputError (and keeps no file) when an output differs by more than
    `atol` (default: ATOL[precision]; see `compare` for the units).

    calib: preprocessed (N, C, H, W) images for int8. nms: {'conf', 'iou', 'max_det'} for a detector with NMS
    inside. meta: the model's name and class names ({'model', 'classes'}), stored in the file.
    """
    task = task_of(model)
    _check((fmt, precision, task, nms, calib))
    check_img_size(img_size, model_stride(model))
    model = prepare(model, fuse)
    graph = DetectWithNMS(model, **nms).eval() if nms else model
    in_chans = getattr(model, "in_chans", 3)
    info = describe(model, img_size, precision, nms, meta)
    path = Path(path)
    if path.is_dir():
        raise InputError(f"export output {str(path)!r} is a folder; pass a file path")
    if SUFFIXES.get(path.suffix.lower()) != fmt:
        raise ConfigError(f"a {fmt} file is named *{SUFFIX[fmt]}; got {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    # written under a temporary name and renamed only once it passed the check: a file that failed is never kept
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    files = [tmp, tmp.with_suffix(".bin")]
    try:
        files = _write(graph, tmp, fmt, example_input(task, batch, in_chans, img_size), info, calib)
        exported = load_exported(tmp, torch.get_num_threads())
        x = example_input(task, check_batch, in_chans, img_size)  # a batch size the export never saw
        if calib is not None:  # int8 ranges cover the user's images, not noise
            x = calib[:check_batch]
        report = check_exported(exported, graph, x, info, atol, fmt, path)
        if precision == "int8" and task == "classify":  # on the user's own images
            report["top1_agreement_calib"] = top1_agreement(exported, graph, calib[:64])
        for f in files:
            os.replace(f, path.with_suffix(f.suffix))
    finally:
        for f in files:
            f.unlink(missing_ok=True)
    report.update(
        path=str(path),
        format=fmt,
        precision=precision,
        task=task,
        img_size=img_size,
        check_batch=check_batch,
        outputs=info["outputs"],
        nms=nms,
        size_mb=sum(path.with_suffix(f.suffix).stat().st_size for f in files) / 1e6,
    )
    return report


def example_input(task: str, n: int, chans: int, img: int) -> torch.Tensor:
    """Noise in the model's input domain: a detector takes images scaled to [0, 1] (out-of-range noise can overflow a
    trained head's box decoding to inf), a classifier normalised images."""
    shape = (n, chans, img, img)
    return torch.rand(shape) if task == "detect" else torch.randn(shape)


def _as_tuple(y) -> tuple:
    return tuple(y) if isinstance(y, (tuple, list)) else (y,)


def check_exported(exported, graph: nn.Module, x: torch.Tensor, info: dict, atol, fmt: str, path: Path) -> dict:
    with torch.inference_mode():
        refs = _as_tuple(graph(x))
    outs = _as_tuple(exported(x))
    for name, o, r in zip(info["outputs"], outs, refs):
        if o.shape != r.shape:
            raise InputError(
                f"exported {fmt} output {name!r} has shape {tuple(o.shape)}, PyTorch {tuple(r.shape)}; nothing written"
            )
        if o.is_floating_point() and not torch.isfinite(o).all():
            raise InputError(f"exported {fmt} output {name!r} is not finite; not written to {path}")
    errors = compare(outs, refs, info["outputs"], info["img_size"])
    precision = info["precision"]
    tol = atol if atol is not None else ATOL[precision]
    enforce = tol is not None and not (info["nms"] and precision != "fp32")  # reduced precision may pick other boxes
    bad = {k: v for k, v in errors.items() if enforce and not v <= tol}
    if bad:
        worst = ", ".join(f"{k} {v:.2e}" for k, v in bad.items())
        raise InputError(
            f"exported {fmt} ({precision}) model differs from PyTorch: {worst} > {tol:g}; not written to {path} "
            "(do not deploy it)"
        )
    return {"errors": errors, "atol": tol, "checked": enforce}


def top1_agreement(exported, graph: nn.Module, images: torch.Tensor) -> float:
    """Share of `images` on which the exported classifier's top-1 class is PyTorch's fp32 one."""
    with torch.inference_mode():
        ref = graph(images).argmax(1)
    return float((exported(images).argmax(1) == ref).float().mean())


def load_runner(path: str | Path, fmt: str | None = None, threads: int | None = None):
    """A callable (torch batch -> numpy array of the first output) backed by the file alone; works on files without
    cspnet metadata too (plain ONNX / TorchScript)."""
    if (fmt or Path(path).suffix.lstrip(".")) == "onnx":
        sess = ort_session(path, threads)
        name = sess.get_inputs()[0].name
        return lambda x: sess.run(None, {name: x.numpy()})[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript's deprecation notice
        module = torch.jit.load(str(path))

    def run(x: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            out = module(x)
        return (out[0] if isinstance(out, tuple) else out).float().numpy()

    return run
