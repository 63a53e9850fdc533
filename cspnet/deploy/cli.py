"""`cspnet export` sub-command: ONNX / OpenVINO / TorchScript, fp32 / fp16 / bf16 / int8, optional NMS, validated."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from cspnet.cli_args import (
    add_output,
    check_output,
    existing_file,
    existing_path,
    fraction,
    image_size,
    key_value,
    nonneg_int,
    positive_float,
    positive_int,
)

if TYPE_CHECKING:
    import torch


def _load_for_export(args: argparse.Namespace):
    """(model, name, image size, meta): from a training checkpoint's own record of its architecture when it has one."""
    from cspnet.errors import ConfigError
    from cspnet.models import create_model, model_info
    from cspnet.models.weights import load_into, read_checkpoint

    name, overrides = args.model, dict(args.override or [])
    if args.weights:
        from cspnet.deploy.runtime import exported_format

        fmt = exported_format(args.weights) if Path(args.weights).is_file() else None
        if fmt:
            raise ConfigError(
                f"{args.weights} is already an exported {fmt} file; export from the checkpoint it came from "
                "(weights/best.pt)"
            )
        sd, meta = read_checkpoint(args.weights)
        if meta is not None:  # a `cspnet <task> train` checkpoint: built as it was trained
            from cspnet.engine.checkpoint import load_model

            if overrides:
                raise ConfigError(f"{args.weights} records its architecture (meta); drop --override")
            model, meta, _ = load_model(args.weights)
            if name and name != meta.get("model"):
                raise ConfigError(f"{args.weights} was trained as {meta.get('model')}, not {name}; drop --model")
            return model, meta.get("model", name or "model"), meta.get("img", 224), meta
        if name is None:
            raise ConfigError("--weights needs --model NAME to know the architecture (see `cspnet models`)")
        fc, preds = sd.get("head.fc.weight"), sd.get("head.preds.0.bias")
        num_classes = fc.shape[0] if fc is not None else None  # None: the model's default
        if fc is None and preds is not None and "head.anchors" in sd:  # a detector: A x (5 + C) predictions
            num_classes = preds.numel() // sd["head.anchors"].shape[1] - 5
        model = create_model(name, num_classes=num_classes, **overrides)
        load_into(model, sd, args.weights)
        return model, name, model_info(name).img_size, {"model": name}
    if name is None:
        raise ConfigError("pass --model NAME or --weights FILE --model NAME")
    return create_model(name, **overrides), name, model_info(name).img_size, {"model": name}


def calibration_files(data: str | Path, n: int) -> list:
    """Up to n images spread evenly over `data`: a folder (searched recursively; its train/ when it has one), a
    classification .zip (its train split), or a detection data.yaml / COCO .json (its train split)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    from cspnet.errors import InputError

    data = Path(data)
    if data.suffix.lower() == ".zip":
        from cspnet.data.datasets import ZipImageDataset, split_names

        splits = split_names(data)
        if not splits:
            raise InputError(f"{data} holds no <split>/<class>/ folders; pass a folder of images instead")
        ds = ZipImageDataset(data, "train" if "train" in splits else splits[0])
        items = [lambda ref=ref: ds.read(ref) for ref, _ in ds.samples]
    elif data.is_file():
        from cspnet.data.detection import open_detection

        items = sorted(r.path for r in open_detection(data, "train").records)
    else:
        root = data / "train" if (data / "train").is_dir() else data
        items = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS)
    if not items:
        raise InputError(f"no images in {data}; --data takes a folder of images, a .zip, a data.yaml or a COCO .json")
    step = max(1, len(items) // n)
    return items[::step][:n]


def load_calibration(data: str | Path, task: str, img: int, n: int) -> torch.Tensor:
    """(N, 3, img, img) preprocessed as `val` does: classifiers resize and centre-crop, detectors letterbox."""
    import torch

    from cspnet.data import eval_transform, load_image
    from cspnet.data.detection_aug import letterbox, make_sample, read_image
    from cspnet.errors import InputError

    if task == "detect" and Path(data).suffix.lower() == ".zip":
        raise InputError(f"{data}: a detector calibrates on a folder of images, a data.yaml or a COCO .json")
    tf = eval_transform(img)
    out = []
    for item in calibration_files(data, n):
        try:
            if task == "classify":
                out.append(tf(load_image(item() if callable(item) else item)))
                continue
            image = read_image(str(item), img)  # as detection val reads it
        except Exception as e:  # PIL raises many types for bad files
            print(f"skipping an unreadable calibration image: {type(e).__name__}: {e}", file=sys.stderr)
            continue
        sample, _, _ = letterbox(make_sample(image, torch.zeros(0, 4), torch.zeros(0)), img)
        out.append(sample["image"].as_subclass(torch.Tensor).float() / 255)
    if not out:
        raise InputError(f"no readable calibration images in {data}")
    return torch.stack(out)


def _precision(args: argparse.Namespace) -> str:
    from cspnet.errors import ConfigError

    chosen = [p for p, on in (("fp16", args.half), ("bf16", args.bf16), ("int8", args.int8)) if on]
    if len(chosen) > 1:
        raise ConfigError(f"choose one of --half, --bf16, --int8 (got {', '.join(chosen)})")
    if args.data and not chosen == ["int8"]:
        raise ConfigError("--data gives the calibration images of --int8; add --int8 or drop --data")
    return chosen[0] if chosen else "fp32"


def _cmd_export(args: argparse.Namespace) -> int:

    from cspnet.deploy.export import SUFFIX, export, task_of
    from cspnet.errors import ConfigError
    from cspnet.models.img_size import check_img_size, model_stride

    precision = _precision(args)
    if precision == "int8" and not args.data:
        raise ConfigError("--int8 needs --data: a folder of images like the ones the model will see, for calibration")
    tag = "" if precision == "fp32" else f"-{precision}"
    if not args.out and args.model:  # the default output is checked like --out, before any work
        check_output(f"{args.model}{tag}{SUFFIX[args.format]}", "file", args.force, "--force", "output")
    model, name, img, meta = _load_for_export(args)
    out = Path(args.out) if args.out else Path(f"{name}{tag}{SUFFIX[args.format]}")
    if not args.out:
        check_output(out, "file", args.force, "--force", "output")
    img = args.img or img
    in_chans = getattr(model, "in_chans", 3)
    check_img_size(img, model_stride(model))  # before calibration images are read; export() checks it too
    task = task_of(model)
    if args.nms and task != "detect":
        raise ConfigError("--nms is for detectors; a classifier's output is its logits")
    calib = load_calibration(args.data, task, img, args.calib) if args.data else None
    nms = {"conf": args.conf, "iou": args.iou, "max_det": args.max_det} if args.nms else None
    report = export(model, out, args.format, img, precision, calib, nms, meta, atol=args.atol)
    if args.runs:
        report["latency_ms_batch1"] = _time(model, nms, out, img, in_chans, args.runs)
    print(json.dumps(report, indent=2) if args.json else _export_line(report))
    return 0


def _time(model, nms, path: Path, img: int, in_chans: int, runs: int) -> dict[str, float]:
    """Batch-1 median latency of the fused PyTorch model and of the file, interleaved (cspnet.bench.measure)."""
    import torch

    from cspnet.bench.measure import summarize, time_interleaved
    from cspnet.deploy.export import example_input, task_of
    from cspnet.deploy.nms import DetectWithNMS
    from cspnet.deploy.runtime import load_exported

    graph = DetectWithNMS(model, **nms).eval() if nms else model
    exported = load_exported(path)
    x = example_input(task_of(model), 1, in_chans, img)
    with torch.inference_mode():
        fns = {"pytorch": lambda: graph(x), f"{exported.format} {exported.precision}": lambda: exported(x)}
        times = time_interleaved(fns, runs=runs, warmup=2)
    return {k: summarize(v)["median_ms"] for k, v in times.items()}


def _export_line(r: dict) -> str:
    line = (
        f"wrote {r['path']} ({r['size_mb']:.1f} MB, {r['format']} {r['precision']}, outputs {', '.join(r['outputs'])}"
    )
    line += ", dynamic batch); "
    errs = ", ".join(f"{k} {v:.1e}" for k, v in r["errors"].items())
    if r["checked"]:
        line += f"vs PyTorch at batch {r['check_batch']}: {errs} (tolerance {r['atol']:g})"
    else:
        line += f"vs PyTorch fp32 at batch {r['check_batch']}: {errs} (not bounded: measure accuracy with `val` on the file)"
    if "top1_agreement_calib" in r:
        line += f"; top-1 agrees with fp32 on {r['top1_agreement_calib']:.0%} of the calibration images"
    if "latency_ms_batch1" in r:
        lat = ", ".join(f"{k} {v:.1f} ms" for k, v in r["latency_ms_batch1"].items())
        line += f"; batch 1 latency: {lat}"
    return line


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a classifier or detector to ONNX, OpenVINO or TorchScript (fp16/bf16/int8, NMS), validated",
        description="Export, reload the file and check it against PyTorch; a file that fails the check is not kept. "
        "--int8 quantizes with onnxruntime's quantizer (onnx) or NNCF (openvino), calibrated on --data.",
    )
    p.add_argument("--model", default=None, help="registered model name, e.g. cspresnet50")
    p.add_argument(
        "--weights",
        type=existing_file,
        default=None,
        help="weights: a training checkpoint (its architecture is used), or .safetensors with --model",
    )
    p.add_argument("--format", choices=("onnx", "openvino", "torchscript"), default="onnx")
    add_output(
        p,
        "--out",
        kind="file",
        default=None,
        help="output file (default: NAME[-PRECISION].onnx / .xml / .torchscript); --force: replace it",
    )
    p.add_argument(
        "--img",
        type=image_size,
        default=None,
        help="image size to trace and validate (default: the training size, or the model's)",
    )
    p.add_argument("--override", type=key_value, action="append", help="architecture override KEY=VALUE")
    p.add_argument("--half", action="store_true", help="fp16 (onnx: fp16 graph; openvino: fp16 weights)")
    p.add_argument("--bf16", action="store_true", help="bf16 (openvino: inference precision; torchscript)")
    p.add_argument("--int8", action="store_true", help="static int8 quantization calibrated on --data (onnx, openvino)")
    p.add_argument(
        "--data",
        type=existing_path,
        default=None,
        help="calibration images for --int8: a folder (recursive), a classification .zip, a data.yaml or COCO .json",
    )
    p.add_argument("--calib", type=positive_int, default=128, help="calibration images used (spread over --data)")
    p.add_argument("--nms", action="store_true", help="detectors: NMS inside; outputs boxes, scores, classes")
    p.add_argument("--conf", type=fraction, default=0.25, help="--nms: score threshold")
    p.add_argument("--iou", type=fraction, default=0.45, help="--nms: IoU threshold")
    p.add_argument("--max-det", type=positive_int, default=100, help="--nms: boxes per image (outputs are padded)")
    p.add_argument(
        "--atol", type=positive_float, default=None, help="max difference vs PyTorch (default per precision)"
    )
    p.add_argument("--runs", type=nonneg_int, default=10, help="timed runs for the speed report (0: skip)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_export)
