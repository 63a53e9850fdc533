"""From a darknet cfg to the native zoo: `from_darknet` returns the native model where the cfg is exactly one.

Exact twins (weights converted, outputs checked equal):
  csdarknet53.cfg -> cspdarknet53 (leaky 0.1), csdarknet53-omega.cfg -> cspdarknet53 with act="mish",
  darknet53.cfg -> darknet53 (leaky 0.1), csresnet50.cfg -> cspresnet50 and csresnext50.cfg -> cspresnext50
  with layout="darknet" (the authors' layout; the default layout is timm's, see cspnet/models/zoo.py).
Darknet splits a CSP stage with two 1x1 convs (cross part, block part) and routes [block, cross]; the native
stage has one conv_exp and concatenates [cross, block]. So conv_exp = the two convs stacked along the output
channels, and conv_transition's input channels are reordered to match.

Detectors (yolov4, yolov4-tiny, yolov4-csp, csresnext50-panet-spp) -> the native YoloDetector: the backbone maps as
above, the neck and head convs in the cfg's layer order (`detector_order`); classes, anchors, scale_x_y and
new_coords come from the [yolo] layers. The native model returns the same boxes, in OpenCV's row order.

Which native model a cfg is goes by structure (match.py), not by file name: a renamed copy with other classes,
anchors or input size (darknet's yolo-obj.cfg recipe) maps too. A cfg that does not map exactly is returned as the
cfg-built model; one named like a native model gets a warning saying where it differs.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cspnet.errors import ConfigError
from cspnet.interop.darknet.cfg import parse_cfg
from cspnet.interop.darknet.match import (
    NotNative,
    act_key,
    candidates,
    classifier_args,
    detector_args,
    emitted,
    first_difference,
    head_conv,
    match_native,
    yolo_levels,
)
from cspnet.interop.darknet.model import Conv, DarknetModel, Route, Yolo
from cspnet.interop.darknet.weights import read_weights
from cspnet.models import CspNet, create_model, model_info
from cspnet.nn.layers import ConvBNAct

# cfg file stem -> native model name: only to explain a cfg that has the name but not the structure
NATIVE = {
    "csdarknet53": "cspdarknet53",
    "csdarknet53-omega": "cspdarknet53",
    "darknet53": "darknet53",
    "csresnet50": "cspresnet50",
    "csresnext50": "cspresnext50",
    "yolov4": "yolov4",
    "yolov4-tiny": "yolov4-tiny",
    "yolov4-csp": "yolov4-csp",
    "csresnext50-panet-spp": "cspresnext50-panet-spp",
}


def native_name(cfg: str | Path) -> str | None:
    """The native model a cfg's file name suggests (only to explain a cfg that does not match); None if none."""
    return NATIVE.get(Path(cfg).stem)


def why_not(dk: DarknetModel, name: str) -> str:
    """Where the cfg first differs from the native model `name`, in words."""
    for cand, args, kw in candidates(dk):
        if cand == name:
            try:
                return first_difference(dk, emitted(cand, args, kw, dk))
            except ConfigError as e:
                return str(e)
    return f"its head does not fit {name}"


@dataclass(frozen=True)
class Slot:
    """Where one cfg conv lives in the native model: module `name`, output rows [rows[0], rows[1]) of it.

    kind: "bn" (a ConvBNAct), "pred" (a YOLO prediction nn.Conv2d, bias and no BN), "fc" (the classifier's
    nn.Linear, a 1x1 conv in the cfg). perm: the native module's input channel j reads the cfg conv's input channel
    perm[j] (a CSP transition: darknet's [route] order -> the native [cross, blocks]).
    """

    layer: int
    name: str
    rows: tuple[int, int]
    kind: str = "bn"
    perm: torch.Tensor | None = None


# a cfg conv's tensors, by the names a ConvBNAct gives them
_BN_KEYS = ("conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var")


def darknet_tensors(layer: Conv) -> dict[str, torch.Tensor]:
    """A cfg conv's tensors: ConvBNAct names with BN, else conv.weight and conv.bias."""
    if isinstance(layer.bn, nn.BatchNorm2d):
        bn = layer.bn
        return {
            "conv.weight": layer.conv.weight,
            "bn.weight": bn.weight,
            "bn.bias": bn.bias,
            "bn.running_mean": bn.running_mean,
            "bn.running_var": bn.running_var,
        }
    return {"conv.weight": layer.conv.weight, "conv.bias": layer.conv.bias}


def native_tensors(mod: nn.Module, slot: Slot) -> dict[str, torch.Tensor]:
    """The native module's tensors under the names darknet_tensors uses (whole, not yet cut to the slot's rows)."""
    if slot.kind == "bn":
        bn = mod.bn
        return {
            "conv.weight": mod.conv.weight,
            "bn.weight": bn.weight,
            "bn.bias": bn.bias,
            "bn.running_mean": bn.running_mean,
            "bn.running_var": bn.running_var,
        }
    weight = mod.weight if slot.kind == "pred" else mod.weight.view(*mod.weight.shape, 1, 1)
    return {"conv.weight": weight, "conv.bias": mod.bias}


@torch.no_grad()
def to_native_slot(mod: nn.Module, slot: Slot, values: dict[str, torch.Tensor]) -> None:
    """Copy one cfg conv's tensors (`darknet_tensors` names) into its rows of the native module."""
    r0, r1 = slot.rows
    for key, dst in native_tensors(mod, slot).items():
        v = values[key]
        if key == "conv.weight" and slot.perm is not None:
            v = v[:, slot.perm]
        dst[r0:r1].copy_(v.reshape(dst[r0:r1].shape))


@torch.no_grad()
def from_native_slot(mod: nn.Module, slot: Slot, values: dict[str, torch.Tensor]) -> None:
    """Copy the slot's rows of the native module into one cfg conv's tensors (the inverse of to_native_slot)."""
    r0, r1 = slot.rows
    for key, src in native_tensors(mod, slot).items():
        v = src[r0:r1].to(values[key])
        if key == "conv.weight" and slot.perm is not None:
            values[key][:, slot.perm] = v.reshape(values[key][:, slot.perm].shape)
        else:
            values[key].copy_(v.reshape(values[key].shape))


def conv_plan(dk: DarknetModel, convs: list[tuple[int, Conv]], targets: list[tuple[str, nn.Module]]) -> list[Slot]:
    """Map the cfg's convs (in layer order) onto native modules (in the same order); NotNative where they differ.

    A CrossStage's conv_exp takes two cfg convs (cross part, block part); its conv_transition's input channels are
    reordered from darknet's [route] order to the native [cross, blocks]. A bare nn.Conv2d target (a YOLO
    prediction conv) takes a conv without BN.
    """
    plan: list[Slot] = []
    k = 0
    cross = -1
    for name, mod in targets:
        take = 2 if name.endswith("conv_exp") else 1
        if k + take > len(convs):
            raise NotNative(f"the cfg has {len(convs)} convolutions, too few for {name}")
        group = convs[k : k + take]
        k += take
        if isinstance(mod, nn.Conv2d):  # prediction conv: bias, no BN; logistic only with new_coords
            ((i, m),) = group
            if isinstance(m.bn, nn.BatchNorm2d) or m.conv.bias is None:
                raise NotNative(f"layer {i} has batch_normalize, the prediction conv {name} has a bias and no BN")
            if m.conv.weight.shape != mod.weight.shape:
                raise NotNative(
                    f"layer {i} ({tuple(m.conv.weight.shape)}) does not fit {name} {tuple(mod.weight.shape)}"
                )
            plan.append(Slot(i, name, (0, mod.out_channels), "pred"))
            continue
        if any(not isinstance(m.bn, nn.BatchNorm2d) for _, m in group):
            raise NotNative(f"layer {group[0][0]} has no batch_normalize, {name} has BN")
        if any(act_key(m.act) != act_key(mod.act) for _, m in group):
            raise NotNative(f"layer {group[0][0]} activation {group[0][1].act} differs from {name}'s {mod.act}")
        first = group[0][1].conv
        out = sum(m.conv.out_channels for _, m in group)
        perm = None
        if name.endswith("conv_exp"):
            cross = group[0][0]
        elif name.endswith("conv_transition"):
            idx = group[0][0]
            route = dk.layers[idx - 1]
            if (
                not isinstance(route, Route)
                or route.groups != 1
                or len(route.sources) != 2
                or cross not in route.sources
            ):
                raise NotNative(f"layer {idx} does not read a [route] of the stage's cross part and blocks")
            bounds, start = {}, 0
            for s in route.sources:  # darknet's concat order -> native [cross, blocks]
                bounds[s] = (start, start + dk.shapes[s][0])
                start = bounds[s][1]
            (tb,) = set(route.sources) - {cross}
            perm = torch.cat([torch.arange(*bounds[cross]), torch.arange(*bounds[tb])])
        same = all(m.conv.weight.shape[1:] == first.weight.shape[1:] for _, m in group)
        if not same or (out, *first.weight.shape[1:]) != mod.conv.weight.shape or mod.conv.stride != first.stride:
            raise NotNative(
                f"layer {group[0][0]} ({(out, *first.weight.shape[1:])}, stride {first.stride}) does "
                f"not fit {name} ({tuple(mod.conv.weight.shape)}, stride {mod.conv.stride})"
            )
        row = 0
        for i, m in group:
            plan.append(Slot(i, name, (row, row + m.conv.out_channels), "bn", perm))
            row += m.conv.out_channels
    if k != len(convs):
        raise NotNative(f"the cfg has {len(convs) - k} convolutions more than the native model")
    return plan


def plan_state_dict(dk: DarknetModel, plan: list[Slot]) -> dict[str, torch.Tensor]:
    """The native state dict entries the plan fills, from the cfg model's tensors."""
    sd: dict[str, torch.Tensor] = {}
    groups: dict[str, list[Slot]] = {}
    for slot in plan:
        groups.setdefault(slot.name, []).append(slot)
    for name, slots in groups.items():
        parts = [darknet_tensors(dk.layers[s.layer]) for s in slots]
        if slots[0].kind == "bn":
            for key in _BN_KEYS:
                sd[f"{name}.{key}"] = torch.cat([p[key] for p in parts], 0)
            if slots[0].perm is not None:
                sd[f"{name}.conv.weight"] = sd[f"{name}.conv.weight"][:, slots[0].perm]
            sd[f"{name}.bn.num_batches_tracked"] = dk.layers[slots[0].layer].bn.num_batches_tracked
        else:
            p = parts[0]  # pred and fc slots take one cfg conv whole
            w = p["conv.weight"]
            sd[f"{name}.weight"] = w if slots[0].kind == "pred" else w.flatten(1)
            sd[f"{name}.bias"] = p["conv.bias"]
    return sd


def classifier_plan(dk: DarknetModel, native: CspNet) -> list[Slot]:
    """The slots of a native classifier: its ConvBNActs in module order, then the head conv as head.fc."""
    head = head_conv(dk)
    convs = [(i, m) for i, m in enumerate(dk.layers) if isinstance(m, Conv) and i != head]
    targets = [(n, m) for n, m in native.named_modules() if isinstance(m, ConvBNAct)]
    fc = native.head.fc
    if not isinstance(fc, nn.Linear) or fc.weight.shape != dk.layers[head].conv.weight.shape[:2]:
        raise NotNative(f"the head conv (layer {head}) does not fit the classifier head.fc")
    return [*conv_plan(dk, convs, targets), Slot(head, "head.fc", (0, fc.out_features), "fc")]


def native_state_dict(dk: DarknetModel, native: CspNet) -> dict[str, torch.Tensor]:
    """Map the cfg model's tensors onto `native`'s keys; NotNative when the two are not the same network."""
    return plan_state_dict(dk, classifier_plan(dk, native))


def detector_order(model: nn.Module) -> list[str]:
    """Module prefixes of a YoloDetector in the order darknet's cfgs run them (each head right after its neck level)."""
    if model.cfg.neck == "tiny":
        return ["backbone", "neck.top", "head.convs.1", "head.preds.1", "neck.reduce", "head.convs.0", "head.preds.0"]
    n = len(model.head.strides)
    order = ["backbone", "neck.top"]
    for i in reversed(range(n - 1)):
        order += [f"neck.reduce.{i}", f"neck.lateral.{i}", f"neck.up_blocks.{i}"]
    order += ["head.convs.0", "head.preds.0"]
    for i in range(n - 1):
        order += [f"neck.down.{i}", f"neck.down_blocks.{i}", f"head.convs.{i + 1}", f"head.preds.{i + 1}"]
    return order


def detector_plan(dk: DarknetModel, native: nn.Module) -> list[Slot]:
    """The slots of a native YoloDetector: its convs in the cfg's layer order (`detector_order`)."""
    modules = list(native.named_modules())
    targets = []
    for prefix in detector_order(native):
        for n, m in modules:
            if n == prefix or n.startswith(prefix + "."):
                if isinstance(m, ConvBNAct) or (n.startswith("head.preds.") and isinstance(m, nn.Conv2d)):
                    targets.append((n, m))
    convs = [(i, m) for i, m in enumerate(dk.layers) if isinstance(m, Conv)]
    return conv_plan(dk, convs, targets)


def native_plan(dk: DarknetModel, native: nn.Module) -> list[Slot]:
    """The slots of a native detector or classifier; NotNative when it is not the cfg's network."""
    return detector_plan(dk, native) if dk.is_detector else classifier_plan(dk, native)


def detector_state_dict(dk: DarknetModel, native: nn.Module) -> dict[str, torch.Tensor]:
    """Map a darknet detector's tensors onto a native YoloDetector; NotNative when they are not the same network."""
    sd = plan_state_dict(dk, detector_plan(dk, native))
    sd["head.anchors"] = native.head.anchors
    return sd


@torch.no_grad()
def darknet_boxes(dk: DarknetModel, x: torch.Tensor) -> torch.Tensor:
    """The cfg model's decoded boxes in the native row order: levels by stride, (cell, anchor)-major."""
    outs = dk.forward_layers(x)
    rows = []
    for i in yolo_levels(dk):
        y: Yolo = dk.layers[i]
        n, _, h, w = outs[i].shape
        d = y.decode(outs[i], (x.shape[2], x.shape[3])).view(n, y.num_anchors, h, w, -1)
        rows.append(d.permute(0, 2, 3, 1, 4).reshape(n, h * w * y.num_anchors, -1))
    return torch.cat(rows, 1)


@torch.no_grad()
def check_equal(dk: DarknetModel, native: CspNet, img: int = 64, tol: float = 1e-4) -> float:
    """Max difference of the logits of both models on a random batch, relative to their scale; raises if > tol."""
    x = torch.randn(2, dk.in_chans, img, img, generator=torch.Generator().manual_seed(0))
    was = dk.training, native.training
    dk.eval(), native.eval()
    if dk.is_detector:  # boxes relative to their size (+1 pixel), probabilities absolute
        ref = darknet_boxes(dk, x)
        out = native(x)
        d = (out - ref).abs()
        err = max((d[..., :4] / (ref[..., :4].abs() + 1)).max().item(), d[..., 4:].max().item())
    else:
        ref = dk.forward_layers(x, keep_all=True)[head_conv(dk)].flatten(1)
        out = native(x)
        err = ((out - ref).abs().max() / ref.abs().max().clamp_min(1e-6)).item()
    dk.train(was[0]), native.train(was[1])
    if not err <= tol:
        raise NotNative(f"outputs differ by {err:.2e} (relative) on a {img}x{img} input")
    return err


def to_native_detector(dk: DarknetModel, name: str, verify: bool = True, **overrides) -> nn.Module:
    """The native detector `name` carrying the cfg model's weights, classes and anchors; NotNative if it differs."""
    native = create_model(name, in_chans=dk.in_chans, **detector_args(dk), **overrides)
    native.load_state_dict(detector_state_dict(dk, native))
    native.head.one_class_logit = True  # darknet trained the class logit, also for one class: score as it does
    if verify:
        check_equal(dk, native)
    return native.train(dk.training)


def to_native(dk: DarknetModel, name: str, verify: bool = True, **overrides) -> nn.Module:
    """The native model `name` carrying the cfg model's weights; NotNative when it is not the same network."""
    if model_info(name).task == "detect":
        return to_native_detector(dk, name, verify, **overrides)
    native = create_model(name, in_chans=dk.in_chans, **classifier_args(dk), **overrides)
    native.load_state_dict(native_state_dict(dk, native))
    if verify:
        check_equal(dk, native)
    return native.train(dk.training)


def from_darknet(
    cfg: str | Path, weights: str | Path | None = None, native: bool = True, verify: bool = True
) -> nn.Module:
    """Build a darknet cfg (and load its `.weights`): the native cspnet model where the cfg is one, else the cfg model.

    The native classifier returns logits (as `create_model`), the native detector decoded boxes in OpenCV's row
    order; the cfg model returns what darknet outputs (a classifier's softmax, a detector's decoded yolo boxes,
    anchor-major in the cfg's [yolo] order). native=False always returns the cfg model.
    verify: check on a random batch that the native model computes what the cfg model does.
    """
    dk = DarknetModel(parse_cfg(cfg))
    if weights is not None:
        read_weights(dk, weights)
    dk.eval()
    if not native:
        return dk
    found = match_native(dk)
    if found is None:
        name = native_name(cfg)
        if name is not None:  # named like a native model but built otherwise: say where it differs
            warnings.warn(f"{cfg} is not exactly {name} ({why_not(dk, name)}); returning the cfg model", stacklevel=2)
        return dk
    name, args = found
    try:
        return to_native(dk, name, verify, **args).eval()
    except NotNative as e:
        warnings.warn(f"{cfg} is not exactly {name} ({e}); returning the cfg model", stacklevel=2)
        return dk
