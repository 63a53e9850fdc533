"""ONNX: export (dynamic batch, named outputs, metadata), fp16 conversion, int8 with onnxruntime's quantizer.

Opset 18 is the default because it has Mish as one op: torch's exporter writes x * tanh(softplus(x)) (three ops)
at every opset, so aten::mish gets its own symbolic here. onnxruntime, OpenVINO and OpenCV all read it.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from cspnet.errors import InputError

OPSET = 18
META_KEY = "cspnet"  # metadata_props key holding the JSON written by cspnet.deploy.export
CONVS = {"Conv", "ConvInteger", "QLinearConv"}


def _mish(g, x):
    return g.op("Mish", x)


def export_onnx(
    model: nn.Module,
    path: str | Path,
    example: torch.Tensor,
    opset: int = OPSET,
    output_names: Sequence[str] = ("logits",),
    meta: dict | None = None,
) -> Path:
    """Write an ONNX file whose batch dimension is dynamic ("batch"); `meta` goes to metadata_props as JSON."""
    path = Path(path)
    if opset >= 18:
        torch.onnx.register_custom_op_symbolic("aten::mish", _mish, 18)  # one Mish op instead of three
    names = list(output_names)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer/deprecation chatter; the file is validated afterwards
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            input_names=["images"],
            output_names=names,
            dynamic_axes={"images": {0: "batch"}, **{n: {0: "batch"} for n in names}},
            opset_version=opset,
        )
    if meta is not None:
        set_metadata(path, meta)
    return path


def set_metadata(path: str | Path, meta: dict) -> None:
    """Store `meta` as JSON under metadata_props["cspnet"] (onnxruntime: get_modelmeta().custom_metadata_map)."""
    import onnx

    m = onnx.load(str(path))
    del m.metadata_props[:]
    m.metadata_props.add(key=META_KEY, value=json.dumps(meta))
    onnx.save(m, str(path))


def to_fp16(src: str | Path, dst: str | Path, keep_tail: bool = False) -> Path:
    """fp16 weights and activations, fp32 inputs and outputs (onnxruntime's float16 converter).

    keep_tail: the nodes after the last convolutions stay fp32 (a detector's exp(t) x anchor overflows fp16).
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    m = onnx.load(str(src))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = convert_float_to_float16(m, keep_io_types=True, node_block_list=tail_nodes(m.graph) if keep_tail else None)
    onnx.save(m, str(dst))
    return Path(dst)


def ort_session(path: str | Path, threads: int | None = None):
    """An onnxruntime CPU session, all graph optimisations on."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def tail_nodes(graph) -> list[str]:
    """Names of the nodes with no convolution after them: a detector's last convs, box decoding and NMS.

    They stay in float when quantizing: int8 steps there would move boxes by pixels (exp of a quantized logit).
    """
    nodes = list(graph.node)
    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(nodes):
        for t in node.input:
            consumers.setdefault(t, []).append(i)
    below = [False] * len(nodes)
    for i in reversed(range(len(nodes))):  # ONNX nodes are topologically sorted
        kids = [k for t in nodes[i].output for k in consumers.get(t, [])]
        below[i] = any(nodes[k].op_type in CONVS or below[k] for k in kids)
    return [n.name for n, b in zip(nodes, below) if not b]


def float_nodes(graph, stem: bool = True) -> list[str]:
    """A detector's nodes that int8 leaves in float: its tail (tail_nodes) and its stem, the first convolution.

    The stem is one conv of many, at 3 input channels. On six detectors trained to a plateau, keeping it float halved
    the mean change of onnxruntime int8's mAP@0.5 and cut its worst case (benchmarks/int8_detect.py).
    """
    first = next((n.name for n in graph.node if n.op_type in CONVS), None) if stem else None
    return tail_nodes(graph) + ([first] if first else [])


def calibration_reader(images: torch.Tensor, input_name: str = "images", batch: int = 8):
    """onnxruntime CalibrationDataReader over a tensor of preprocessed images (the MinMax calibrator keeps only each
    tensor's min and max per batch, so memory does not grow with the number of images)."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(images.split(batch))

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {input_name: x.numpy()}

    return _Reader()


def check_calibration(calib: torch.Tensor) -> None:
    if calib.dim() != 4 or len(calib) == 0:
        raise InputError(f"calibration images must be a non-empty (N, C, H, W) batch, got {tuple(calib.shape)}")


def quantize_onnx_int8(
    fp32_path: str | Path, int8_path: str | Path, calib: torch.Tensor, detector: bool = False, float_stem: bool = True
) -> Path:
    """Static int8 post-training quantization with onnxruntime's quantizer: QDQ format, per-channel int8 weights,
    uint8 activations with min/max ranges from `calib` (the u8 x s8 pair VNNI multiplies natively).

    detector: leave the nodes after the last convolutions (decode, NMS) and the stem conv in float (float_nodes;
    float_stem=False quantizes the stem too, for benchmarks/int8_detect.py).
    Without VNNI, weights use 7 bits (reduce_range) so u8 x s8 sums cannot saturate in AVX2's 16-bit adds.
    """
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    check_calibration(calib)
    fp32_path, int8_path = Path(fp32_path), Path(int8_path)
    pre = int8_path.with_name(int8_path.stem + ".pre.onnx")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
            exclude = float_nodes(onnx.load(str(pre)).graph, float_stem) if detector else []
            quantize_static(
                str(pre),
                str(int8_path),
                calibration_reader(calib),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                reduce_range=not has_vnni(),
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=exclude,
            )
    finally:
        pre.unlink(missing_ok=True)
    return int8_path


def has_vnni() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True  # not Linux: assume a current CPU
    return "avx512_vnni" in flags or "avx_vnni" in flags or "amx_int8" in flags
