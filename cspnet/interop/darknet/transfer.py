"""Darknet `.weights` straight into a native model, and a native model out as a darknet `.cfg` + `.weights` pair.

The layout comes from the model: `emit.cfg_text` writes the cfg darknet would run for it, and native.py's slots say
which native tensor rows each cfg conv fills. A file may hold fewer layers (darknet's `partial` files, e.g.
yolov4-tiny.conv.29) or another class count (the YOLO output convs, the classifier): what it holds is loaded and
the rest keeps its fresh weights, as darknet's training does.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cspnet.errors import ConfigError, InputError
from cspnet.interop.darknet.cfg import parse_cfg_text
from cspnet.interop.darknet.emit import cfg_text, darknet_layout
from cspnet.interop.darknet.model import Conv, DarknetModel
from cspnet.interop.darknet.native import (
    NotNative,
    Slot,
    check_equal,
    darknet_tensors,
    from_native_slot,
    native_plan,
    plan_state_dict,
    to_native_slot,
)
from cspnet.interop.darknet.weights import DarknetHeader, read_header, write_weights
from cspnet.io import atomic_write


def is_darknet_weights(path: str | Path) -> bool:
    """Whether `path` is a darknet `.weights` file, by its content (not its name).

    The header is int32 major, minor, revision, then `seen` (int64 when major*10+minor >= 2, else int32); then
    float32 values. Zip (torch), pickle and safetensors files fail these checks.
    """
    path = Path(path)
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        head = f.read(20)
    if len(head) < 16 or head[:2] == b"PK" or head[:1] == b"\x80" or head[8:9] == b"{":
        return False
    h = read_header(head + b"\0" * (20 - len(head)))
    if not (0 <= h.major < 1000 and 0 <= h.minor < 1000 and 0 <= h.revision < 10**6):
        return False
    payload = path.stat().st_size - h.nbytes
    return payload > 0 and payload % 4 == 0


def _class_convs(layout: DarknetModel) -> list[int]:
    """The class-dependent layers: each [yolo]'s prediction conv, or a classifier's last conv."""
    if layout.is_detector:
        return [i - 1 for i in layout.yolo_layers]
    return [max(i for i, m in enumerate(layout.layers) if isinstance(m, Conv))]


def _file_classes(layout: DarknetModel, classes: int, have: int) -> int | None:
    """The class count a full file of `have` values was trained for (the layout's values are affine in it)."""
    per_class = 0
    for i in _class_convs(layout):
        c = layout.layers[i].conv
        per_row = c.in_channels // c.groups * c.kernel_size[0] * c.kernel_size[1] + 1  # weights and bias
        per_class += per_row * (layout.layers[i + 1].num_anchors if layout.is_detector else 1)
    base = layout.num_weight_values() - classes * per_class
    n, rest = divmod(have - base, per_class)
    return n if rest == 0 and n >= 1 else None


def _records(layer: Conv) -> list[tuple[str, torch.Size]]:
    """A conv's tensors in `.weights` order, by the names native.darknet_tensors uses."""
    keys = ["bn.bias", "bn.weight", "bn.running_mean", "bn.running_var", "conv.weight"]
    if not isinstance(layer.bn, nn.BatchNorm2d):
        keys = ["conv.bias", "conv.weight"]
    return list(zip(keys, [t.shape for t in layer.weight_tensors()]))


def _plan(layout: DarknetModel, model: nn.Module) -> list[Slot]:
    try:
        return native_plan(layout, model)
    except NotNative as e:  # the cfg was written from this model: a bug, not the user's input
        raise ConfigError(f"cannot map {type(model).__name__} onto its own darknet layout ({e})") from None


def load_darknet_weights(model: nn.Module, path: str | Path, verbose: bool = True) -> dict:
    """Load a darknet `.weights` file into a native YoloDetector or CspNet classifier; returns what was loaded.

    The file may hold the whole network, its first N layers (a partial file: the rest stays fresh), or the whole
    network trained for another class count (the class-dependent convs stay fresh). Prints one line saying which.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"weights file {str(path)!r} not found; pass an existing darknet .weights file")
    name = getattr(model, "name", type(model).__name__)
    own = darknet_layout(model)
    classes = model.num_classes
    with open(path, "rb") as f:
        head = read_header(f.read(20), str(path))
        payload = path.stat().st_size - head.nbytes
        if payload % 4:
            raise InputError(f"{path}: {payload} payload bytes is not a whole number of float32 values; damaged")
        have = payload // 4
        counts = [sum(t.numel() for t in layer.weight_tensors()) for layer in own.layers]
        ends = np.cumsum(counts).tolist()
        layout, n, file_classes = own, len(own.layers), classes
        if have != ends[-1]:
            cut = [j + 1 for j, e in enumerate(ends) if e == have and counts[j]]
            file_classes = None if cut else _file_classes(own, classes, have)
            if cut:
                n = cut[0]
            elif file_classes is not None:
                layout = darknet_layout(model, file_classes)
            else:
                raise InputError(
                    f"{path} holds {have} values after the header; {name} needs {ends[-1]} (or the first layers' "
                    "values, for a partial file): the file is for another architecture"
                )
        f.seek(head.nbytes)
        plan = {s.layer: s for s in _plan(own, model)}
        modules = dict(model.named_modules())
        skip = set(_class_convs(own)) if file_classes != classes else set()
        loaded = 0
        for i, layer in enumerate(layout.layers[:n]):
            if not isinstance(layer, Conv):  # the only weighted layer type a native model's layout has
                continue
            values = {}
            for key, shape in _records(layer):
                values[key] = torch.from_numpy(np.fromfile(f, "<f4", shape.numel()).astype(np.float32)).view(shape)
            if i not in skip:
                to_native_slot(modules[plan[i].name], plan[i], values)
                loaded += 1
    convs = sum(isinstance(m, Conv) for m in own.layers)
    if n < len(own.layers):
        line = (
            f"{path.name}: loaded darknet layers 0-{n - 1} ({loaded} of {convs} convolutions) into {name}; the "
            f"other {convs - loaded} keep their fresh weights, as in darknet's training"
        )
    elif skip:
        what = f"its {len(skip)} YOLO output convolutions keep their" if own.is_detector else "its classifier keeps its"
        line = (
            f"{path.name}: loaded {loaded} of {convs} convolutions into {name}; the file is trained for "
            f"{file_classes} classes, the model has {classes}: {what} fresh weights"
        )
    else:
        line = f"{path.name}: loaded all {convs} convolutions into {name}"
    if verbose:
        print(line, flush=True)
    return dict(layers=n, convs=loaded, total_convs=convs, file_classes=file_classes, seen=head.seen)


def _scored_as_darknet(model: nn.Module) -> nn.Module:
    """A one-class detector that scores by objectness (its class logit untrained, YoloHead.one_class_logit False)
    as darknet reads it: a copy whose class logit is a constant probability of 1 (weights 0, bias 30, whose sigmoid
    is 1.0 in float32), so that darknet, OpenCV and a re-import score exactly as the model does."""
    head = getattr(model, "head", None)
    if getattr(head, "num_classes", None) != 1 or getattr(head, "one_class_logit", True):
        return model
    model = copy.deepcopy(model)
    with torch.no_grad():
        for pred in model.head.preds:
            pred.weight.view(head.num_anchors, -1, *pred.weight.shape[1:])[:, 5:] = 0
            pred.bias.view(head.num_anchors, -1)[:, 5:] = 30.0
    model.head.one_class_logit = True
    return model


def to_darknet(
    model: nn.Module, cfg: str | Path, weights: str | Path, img: int | None = None, verify: bool = True
) -> tuple[Path, Path]:
    """Write a native detector (any class count, anchors) or classifier as a darknet `.cfg` + `.weights` pair.

    darknet and OpenCV's readNetFromDarknet load the pair. img: [net] width and height (default: the model's zoo
    input size). verify: check that the cfg model computes what `model` does on a random batch. A one-class model
    trained here (no class term in the loss) is written with a constant class probability of 1, as it scores.
    """
    model = _scored_as_darknet(model)
    text = cfg_text(model, img)
    dk = DarknetModel(parse_cfg_text(text, str(cfg)))
    plan = _plan(dk, model)
    modules = dict(model.named_modules())
    for slot in plan:
        from_native_slot(modules[slot.name], slot, darknet_tensors(dk.layers[slot.layer]))
    own = model.state_dict()
    for key, value in plan_state_dict(dk, plan).items():  # mapped back, every tensor is the model's own
        if not key.endswith("num_batches_tracked") and not torch.equal(value, own[key].detach().cpu().float()):
            raise ConfigError(f"{key} does not map back onto itself through the darknet layout")
    if verify:
        check_equal(dk.eval(), copy.deepcopy(model).to("cpu", torch.float32).eval())
    cfg_path = atomic_write(cfg, lambda f: f.write(text.encode()))
    return cfg_path, write_weights(dk, weights, DarknetHeader(0, 2, 5))
