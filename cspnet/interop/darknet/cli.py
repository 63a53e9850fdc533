"""`cspnet darknet info CFG` (layer table, params, BFLOPs), `cspnet darknet convert CFG WEIGHTS OUT` and
`cspnet darknet export CHECKPOINT OUT.cfg OUT.weights` (a native model trained here, for darknet and OpenCV)."""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from cspnet.cli_args import add_output, existing_file, image_size
from cspnet.errors import ConfigError
from cspnet.interop.darknet.cfg import parse_cfg
from cspnet.interop.darknet.model import DarknetModel


@torch.no_grad()
def layer_table(model: DarknetModel) -> list[dict]:
    """Per layer: type, description, output shape, params and BFLOPs (darknet's: 2 x MACs, by FlopCounterMode).

    Build the model on the meta device to keep this instant for large cfgs.
    """
    p = next(model.parameters(), None)  # a cfg may have no weighted layer at all
    x = torch.zeros(1, model.in_chans, *model.img_size, device=p.device if p is not None else "cpu")
    model.eval()
    outs: dict[int, torch.Tensor] = {}
    rows = []
    for i, layer in enumerate(model.layers):
        with FlopCounterMode(display=False) as counter:
            x = layer(x, outs)
        outs[i] = x
        c, h, w = model.shapes[i]
        rows.append(
            dict(
                index=i,
                type=layer.kind,
                desc=layer.desc,
                out=f"{c} x {h} x {w}",
                params=sum(t.numel() for t in layer.parameters()),
                bflops=counter.get_total_flops() / 1e9,
            )
        )
    return rows


def _cmd_info(args: argparse.Namespace) -> int:
    with torch.device("meta"):
        model = DarknetModel(parse_cfg(args.cfg), args.img)
    rows = layer_table(model)
    print(f"{'layer':>5}  {'type':<14} {'':<24} {'output':>18} {'params':>11} {'BFLOPs':>8}")
    for r in rows:
        print(f"{r['index']:>5}  {r['type']:<14} {r['desc']:<24} {r['out']:>18} {r['params']:>11,} {r['bflops']:>8.3f}")
    params = sum(r["params"] for r in rows)
    bflops = sum(r["bflops"] for r in rows)
    h, w = model.img_size
    print(f"total: {len(rows)} layers, {params / 1e6:.3f}M params, {bflops:.3f} BFLOPs at {h}x{w} (2 x MACs)")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from cspnet.interop.darknet.native import from_darknet
    from cspnet.models.weights import save_state_dict

    with torch.device("meta"):
        if not DarknetModel(parse_cfg(args.cfg)).num_weight_values():
            raise ConfigError(f"{args.cfg} has no layer with weights (convolutional, connected); nothing to convert")
    model = from_darknet(args.cfg, args.weights, native=not args.generic)
    what = f"native {model.name}" if getattr(model, "name", None) else "cfg model (cspnet.interop.darknet.DarknetModel)"
    out = save_state_dict(model.state_dict(), args.out)
    print(f"wrote {out}: {what}, {len(model.state_dict())} tensors")
    return 0


def load_native(path: str, name: str | None = None):
    """(model, its input size) from a training checkpoint (its meta records the architecture) or a state dict
    with `name`."""
    from cspnet.models import create_model, model_info
    from cspnet.models.weights import load_into, read_checkpoint

    sd, meta = read_checkpoint(path)
    if meta is not None:
        if name and name != meta.get("model"):
            raise ConfigError(f"{path} was trained as {meta.get('model')}, not {name}; drop --model")
        model = create_model(meta["model"], num_classes=meta["num_classes"], **meta.get("overrides", {}))
        load_into(model, sd, path)
        return model.eval(), meta.get("img")
    if name is None:
        raise ConfigError(f"{path} holds bare weights; pass --model NAME to say the architecture")
    if "head.anchors" in sd:  # a detector: each prediction conv has anchors x (5 + classes) rows
        num_classes = sd["head.preds.0.bias"].numel() // sd["head.anchors"].shape[1] - 5
    else:
        num_classes = sd["head.fc.weight"].shape[0] if "head.fc.weight" in sd else None
    model = create_model(name, num_classes=num_classes)
    load_into(model, sd, path)
    return model.eval(), model_info(name).img_size


def _cmd_export(args: argparse.Namespace) -> int:
    from cspnet.interop.darknet.transfer import to_darknet

    model, img = load_native(args.weights, args.model)
    cfg, weights = to_darknet(model, args.cfg, args.out_weights, img=args.img or img)
    print(f"wrote {cfg} and {weights}: {getattr(model, 'name', 'model')}, {model.num_classes} classes")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("darknet", help="darknet .cfg/.weights: layer table, conversion, export")
    dsub = p.add_subparsers(dest="darknet_command", required=True)

    q = dsub.add_parser("info", help="layer table with params and BFLOPs of a .cfg")
    q.add_argument("cfg", type=existing_file, help="darknet .cfg file")
    q.add_argument("--img", type=image_size, default=None, help="input size (default: the cfg's width/height)")
    q.set_defaults(func=_cmd_info)

    q = dsub.add_parser("convert", help="convert .cfg + .weights to .safetensors (or .pt)")
    q.add_argument("cfg", type=existing_file, help="darknet .cfg file")
    q.add_argument("weights", type=existing_file, help="darknet .weights file")
    add_output(
        q, "out", kind="file", inputs=("cfg", "weights"), help="output file: .safetensors, or .pt for a torch file"
    )
    q.add_argument("--generic", action="store_true", help="keep the cfg model even where a native twin exists")
    q.set_defaults(func=_cmd_convert)

    q = dsub.add_parser("export", help="write a native detector or classifier as darknet .cfg + .weights")
    q.add_argument("weights", type=existing_file, help="a `cspnet <task> train` checkpoint, or weights with --model")
    add_output(q, "cfg", kind="file", inputs=("weights",), help="output darknet .cfg")
    add_output(q, "out_weights", kind="file", inputs=("weights", "cfg"), help="output darknet .weights")
    q.add_argument("--model", default=None, help="architecture of bare weights (a checkpoint records its own)")
    q.add_argument("--img", type=image_size, default=None, help="[net] width and height (default: the training size)")
    q.set_defaults(func=_cmd_export)
