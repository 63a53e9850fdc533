"""Run an exported file like the model it came from: `load_exported(path)(images)` -> torch tensors.

Reads ONNX (onnxruntime), OpenVINO IR (.xml) and TorchScript (.torchscript, or a .pt that is a TorchScript archive).
The metadata `cspnet export` stores in the file (ONNX metadata_props, OpenVINO rt_info, TorchScript extra files)
gives the task, input size, class count and names, stride, precision and output names. Inputs are fp32 image
batches as the PyTorch model takes them; outputs come back as the PyTorch model returns them: logits (B, C) for a
classifier, decoded rows (B, N, 5 + C) for a detector, or (boxes, scores, classes) for a file exported with --nms.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from cspnet.errors import InputError

SUFFIXES = {".onnx": "onnx", ".xml": "openvino", ".torchscript": "torchscript", ".pt": "torchscript"}
EXTRA_FILE = "cspnet.json"  # TorchScript extra file holding the metadata


def is_torchscript(path: str | Path) -> bool:
    """True for a TorchScript archive (code/ and constants.pkl inside), False for a torch.save checkpoint."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("/constants.pkl") or "/code/" in n for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def exported_format(path: str | Path) -> str | None:
    """'onnx' | 'openvino' | 'torchscript' for a file `cspnet export` writes, None for anything else
    (a training checkpoint .pt, safetensors, ...)."""
    fmt = SUFFIXES.get(Path(path).suffix.lower())
    if fmt == "torchscript" and Path(path).suffix.lower() == ".pt" and not is_torchscript(path):
        return None
    return fmt


def _no_meta(path: Path) -> InputError:
    return InputError(
        f"{path} has no cspnet metadata (task, input size, classes); export it with `cspnet export` to run it here"
    )


class ExportedModel:
    """An exported file as a callable: fp32 (B, C, H, W) torch batch in, torch tensors out (fp32; classes int64).

    Attributes mirror the model's: task ('classify' | 'detect'), img_size, in_chans, num_classes, classes (names or
    None), stride (detectors), nms (dict of conf/iou/max_det or None), precision, format, meta (all of it).
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"exported model {self.path} not found")
        fmt = exported_format(self.path)
        if fmt is None:
            raise InputError(f"{self.path} is not an exported model; expected .onnx, .xml (OpenVINO) or .torchscript")
        self.format = fmt
        threads = threads or torch.get_num_threads()
        self._run, meta = {"onnx": _onnx, "openvino": _openvino, "torchscript": _torchscript}[fmt](self.path, threads)
        if not meta:
            raise _no_meta(self.path)
        self.meta = meta
        self.task = meta["task"]
        self.img_size = int(meta["img_size"])
        self.in_chans = int(meta.get("in_chans", 3))
        self.num_classes = int(meta["num_classes"])
        self.classes = meta.get("classes")
        self.stride = meta.get("stride")
        self.nms = meta.get("nms")
        self.precision = meta.get("precision", "fp32")
        self.outputs = tuple(meta["outputs"])
        self.training = False

    def eval(self) -> ExportedModel:
        return self

    def to(self, device: str | torch.device | None = None) -> ExportedModel:
        """The file runs on the CPU runtimes here: 'cpu' is accepted (a no-op), any other device is refused."""
        if device is not None and torch.device(device).type != "cpu":
            raise InputError(f"{self.path.name} runs on the CPU ({self.format}); drop --device {device}")
        return self

    def check_input(self, x: torch.Tensor) -> None:
        want = (self.in_chans, self.img_size, self.img_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != want:
            raise InputError(
                f"{self.path.name} was exported for (N, {want[0]}, {want[1]}, {want[2]}) batches, got {tuple(x.shape)}; "
                f"resize or letterbox to {self.img_size}, or export again with --img {x.shape[-1] if x.dim() == 4 else '?'}"
            )

    def __call__(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        self.check_input(x)
        outs = [torch.as_tensor(np.asarray(o)) for o in self._run(x.detach().float().cpu().contiguous())]
        outs = [o.long() if n == "classes" else o.float() for o, n in zip(outs, self.outputs)]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def __repr__(self) -> str:
        return f"ExportedModel({str(self.path)!r}, {self.format}, {self.task}, {self.precision})"


def load_exported(path: str | Path, threads: int | None = None) -> ExportedModel:
    """The exported file at `path`, ready to call on torch batches (threads: runtime threads, default torch's)."""
    return ExportedModel(path, threads)


Runner = Callable[[torch.Tensor], list]


def _onnx(path: Path, threads: int) -> tuple[Runner, dict | None]:
    from cspnet.deploy.onnx_export import META_KEY, ort_session

    try:
        sess = ort_session(path, threads)
    except ImportError:
        raise InputError("running .onnx files needs onnxruntime: pip install 'cspnet[onnx]'") from None
    except Exception as e:  # onnxruntime raises its own types for unreadable files
        raise InputError(f"onnxruntime cannot read {path}: {str(e).splitlines()[0]}") from None
    raw = sess.get_modelmeta().custom_metadata_map.get(META_KEY)
    name = sess.get_inputs()[0].name
    return (lambda x: sess.run(None, {name: x.numpy()})), (json.loads(raw) if raw else None)


def _openvino(path: Path, threads: int) -> tuple[Runner, dict | None]:
    from cspnet.deploy.openvino_export import compile_openvino, read_openvino

    try:
        model, meta = read_openvino(path)
    except RuntimeError as e:
        raise InputError(f"OpenVINO cannot read {path}: {str(e).strip().splitlines()[0]}") from None
    if meta is None:
        raise _no_meta(path)
    compiled = compile_openvino(model, meta.get("precision", "fp32"), threads)
    request = compiled.create_infer_request()

    def run(x: torch.Tensor) -> list:
        res = request.infer({0: x.numpy()})
        return [res[o] for o in compiled.outputs]

    return run, meta


def _torchscript(path: Path, threads: int) -> tuple[Runner, dict | None]:
    import torchvision  # noqa: F401  (registers torchvision::nms for files exported with --nms)

    extra = {EXTRA_FILE: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript's deprecation notice
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except RuntimeError as e:
        raise InputError(f"cannot read {path} as TorchScript: {str(e).strip().splitlines()[0]}") from None
    meta = json.loads(extra[EXTRA_FILE]) if extra[EXTRA_FILE] else None

    def run(x: torch.Tensor) -> list:
        with torch.inference_mode():
            out = module(x)
        return [o.float() if o.is_floating_point() else o for o in (out if isinstance(out, tuple) else (out,))]

    return run, meta
