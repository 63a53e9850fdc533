"""`cspnet export` sub-command."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cspnet.cli_args import add_output, check_output, existing_file, image_size, key_value, nonneg_int, positive_float


def _load_for_export(args: argparse.Namespace):
    """The model to export: from a training checkpoint's own record of its architecture when it has one."""
    from cspnet.errors import ConfigError
    from cspnet.models import create_model, model_info
    from cspnet.models.weights import load_into, read_checkpoint

    name, overrides = args.model, dict(args.override or [])
    if args.weights:
        sd, meta = read_checkpoint(args.weights)
        if meta is not None:  # a `cspnet <task> train` checkpoint: built as it was trained
            from cspnet.engine.checkpoint import load_model

            if overrides:
                raise ConfigError(f"{args.weights} records its architecture (meta); drop --override")
            model, meta, _ = load_model(args.weights)
            if name and name != meta.get("model"):
                raise ConfigError(f"{args.weights} was trained as {meta.get('model')}, not {name}; drop --model")
            return model, meta.get("model", name or "model"), meta.get("img", 224)
        if name is None:
            raise ConfigError("--weights needs --model NAME to know the architecture (see `cspnet models`)")
        fc, preds = sd.get("head.fc.weight"), sd.get("head.preds.0.bias")
        num_classes = fc.shape[0] if fc is not None else None  # None: the model's default
        if fc is None and preds is not None and "head.anchors" in sd:  # a detector: A x (5 + C) predictions
            num_classes = preds.numel() // sd["head.anchors"].shape[1] - 5
        model = create_model(name, num_classes=num_classes, **overrides)
        load_into(model, sd, args.weights)
        return model, name, model_info(name).img_size
    if name is None:
        raise ConfigError("pass --model NAME or --weights FILE --model NAME")
    return create_model(name, **overrides), name, model_info(name).img_size


def _cmd_export(args: argparse.Namespace) -> int:
    from cspnet.deploy.export import SUFFIX, export

    if not args.out and args.model:  # the default output is checked like --out, before any work
        check_output(f"{args.model}{SUFFIX[args.format]}", "file", args.force, "--force", "output")
    model, name, img = _load_for_export(args)
    out = Path(args.out) if args.out else Path(f"{name}{SUFFIX[args.format]}")
    if not args.out:
        check_output(out, "file", args.force, "--force", "output")
    report = export(model, out, args.format, img_size=args.img or img, atol=args.atol, runs=args.runs)
    print(json.dumps(report, indent=2) if args.json else _export_line(report))
    return 0


def _export_line(r: dict) -> str:
    line = f"wrote {r['path']} ({r['size_mb']:.1f} MB, {r['format']}, dynamic batch); "
    line += f"max |diff| vs PyTorch {r['max_abs_diff']:.1e} at batch {r['check_batch']} (tolerance {r['atol']:g})"
    if "latency_ms_batch1" in r:
        lat = ", ".join(f"{k} {v:.1f} ms" for k, v in r["latency_ms_batch1"].items())
        line += f"; batch 1 latency: {lat}"
    return line


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a model to ONNX or TorchScript (dynamic batch), validated")
    p.add_argument("--model", default=None, help="registered model name, e.g. cspresnet50")
    p.add_argument(
        "--weights",
        type=existing_file,
        default=None,
        help="weights: a training checkpoint (its architecture is used), or .safetensors with --model",
    )
    p.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
    add_output(
        p, "--out", kind="file", default=None, help="output file (default: NAME.onnx / NAME.pt); --force: replace it"
    )
    p.add_argument(
        "--img",
        type=image_size,
        default=None,
        help="image size to trace and validate (default: the training size, or 224)",
    )
    p.add_argument("--override", type=key_value, action="append", help="architecture override KEY=VALUE")
    p.add_argument("--atol", type=positive_float, default=1e-4, help="max |output diff| vs PyTorch")
    p.add_argument("--runs", type=nonneg_int, default=10, help="timed runs for the speed report (0: skip)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_export)
