"""OpenVINO: IR (.xml + .bin) from our ONNX file, fp16 weights, int8 with NNCF, and compiling it for the CPU.

int8 uses NNCF (`nncf.quantize`), OpenVINO's own quantizer: it puts FakeQuantize ops where OpenVINO's
low-precision transformations turn them into int8 kernels, which onnxruntime's QDQ placement does not aim at.
OpenVINO's CPU plugin runs bf16 by default on CPUs that have it (AVX-512 BF16, AMX), so every file records the
precision it was validated at and `compile_openvino` asks for exactly that one.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from cspnet.errors import ConfigError, InputError

META_KEY = ["cspnet", "meta"]  # rt_info path of the JSON written by cspnet.deploy.export
CONVS = {"Convolution", "GroupConvolution"}
HINTS = {"fp32": "f32", "fp16": "f16", "bf16": "bf16", "int8": "f32"}  # int8 graphs: float parts in f32


def need_openvino():
    try:
        import openvino
    except ImportError:
        raise ConfigError("OpenVINO export and inference need openvino: pip install 'cspnet[openvino]'") from None
    return openvino


def cpu_capabilities() -> set[str]:
    """OpenVINO's CPU OPTIMIZATION_CAPABILITIES, e.g. {'FP32', 'BF16', 'INT8', ...}."""
    ov = need_openvino()
    return set(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def tail_ops(model) -> list[str]:
    """Friendly names of the ops with no convolution after them (a detector's last convs, decode, NMS)."""
    below: dict[str, bool] = {}
    names = []
    for op in reversed(model.get_ordered_ops()):
        kids = [i.get_node() for o in op.outputs() for i in o.get_target_inputs()]
        name = op.get_friendly_name()
        below[name] = any(k.get_type_name() in CONVS or below.get(k.get_friendly_name(), False) for k in kids)
        if not below[name] and op.get_type_name() not in ("Parameter", "Constant", "Result"):
            names.append(name)
    return names


def stem_ops(model) -> list[str]:
    """The friendly name of the first convolution (the stem), if any."""
    return [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() in CONVS][:1]


def quantize_nncf(model, calib: torch.Tensor, detector: bool = False, float_stem: bool = True):
    """Static int8 with NNCF: MIXED preset (symmetric weights, asymmetric activations: Mish and leaky ReLU outputs
    are mostly positive), statistics from every image of `calib`. detector: its tail and (unless float_stem=False)
    its stem conv stay float, as in cspnet.deploy.onnx_export.float_nodes."""
    import contextlib
    import logging
    import sys

    from cspnet.deploy.onnx_export import check_calibration

    check_calibration(calib)
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # nncf's torch import: "No CUDA runtime"
    try:
        import nncf
    except ImportError:
        raise ConfigError("--int8 with --format openvino needs nncf: pip install 'cspnet[openvino]'") from None
    nncf.set_log_level(logging.ERROR)
    data = nncf.Dataset([x.numpy() for x in calib.split(1)])
    stem = stem_ops(model) if float_stem else []
    ignored = nncf.IgnoredScope(names=tail_ops(model) + stem, validate=False) if detector else None
    with contextlib.redirect_stdout(sys.stderr):  # its progress bars: stdout stays for the report (--json)
        return nncf.quantize(
            model, data, preset=nncf.QuantizationPreset.MIXED, subset_size=len(calib), ignored_scope=ignored
        )


def to_openvino(
    onnx_path: str | Path,
    xml_path: str | Path,
    meta: dict,
    precision: str = "fp32",
    calib: torch.Tensor | None = None,
    keep_tail: bool = False,
) -> Path:
    """Convert our ONNX file to IR; fp16: weights stored in fp16; int8: NNCF on `calib`. `meta` goes to rt_info."""
    ov = need_openvino()
    model = ov.convert_model(str(onnx_path))
    if precision == "int8":
        model = quantize_nncf(model, calib, detector=keep_tail)
    model.set_rt_info(json.dumps(meta), META_KEY)
    ov.save_model(model, str(xml_path), compress_to_fp16=precision == "fp16")
    return Path(xml_path)


def read_openvino(xml_path: str | Path):
    """(ov.Model, its cspnet metadata or None)."""
    ov = need_openvino()
    model = ov.Core().read_model(str(xml_path))
    meta = json.loads(model.get_rt_info(META_KEY).astype(str)) if model.has_rt_info(META_KEY) else None
    return model, meta


def compile_openvino(model, precision: str = "fp32", threads: int | None = None):
    """A compiled CPU model at the precision the file was validated at, one stream (latency)."""
    ov = need_openvino()
    caps = cpu_capabilities()
    hint = HINTS.get(precision, "f32")
    if hint == "bf16" and "BF16" not in caps:
        raise InputError(
            "this file runs in bf16, which this CPU lacks (no AVX-512 BF16 or AMX); export it without --bf16"
        )
    if hint == "f16" and "FP16" not in caps:
        hint = "f32"  # fp16 weights, computed in f32 on CPUs without fp16 arithmetic
    cfg = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}
    if threads:
        cfg["INFERENCE_NUM_THREADS"] = str(threads)
    return ov.Core().compile_model(model, "CPU", cfg)
