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
A cfg that does not map exactly is returned as the cfg-built model, with a warning saying why.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from cspnet.errors import ConfigError
from cspnet.interop.darknet.cfg import parse_cfg
from cspnet.interop.darknet.model import AvgPool, Conv, DarknetModel, Route, Softmax, Yolo
from cspnet.interop.darknet.weights import read_weights
from cspnet.models import CspNet, create_model, model_info
from cspnet.nn.layers import ConvBNAct

# cfg file stem -> native model name
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
# architecture arguments the native model needs to be the cfg's network
NATIVE_ARGS = {"csresnet50": {"layout": "darknet"}, "csresnext50": {"layout": "darknet"}}


class NotNative(ConfigError):
    """The cfg does not map exactly onto the native model."""


def native_name(cfg: str | Path) -> str | None:
    """The native model a cfg file corresponds to, by its file name; None when there is none."""
    return NATIVE.get(Path(cfg).stem)


def _act_key(act: nn.Module) -> tuple:
    if isinstance(act, nn.LeakyReLU):
        return ("leaky", round(act.negative_slope, 6))
    return (type(act).__name__,)


def _head_conv(dk: DarknetModel) -> int:
    """Index of the classifier conv: [avgpool] -> 1x1 conv without BN -> optional [softmax] at the end."""
    layers = list(dk.layers)
    end = len(layers) - 1 if isinstance(layers[-1], Softmax) else len(layers)
    i = end - 1
    ok = i >= 1 and isinstance(layers[i], Conv) and isinstance(layers[i - 1], AvgPool)
    if not ok or layers[i].conv.kernel_size != (1, 1) or layers[i].conv.bias is None:
        raise NotNative("the cfg does not end in [avgpool] -> 1x1 [convolutional] (-> [softmax])")
    return i


def _cat_bn(dks: list[Conv]) -> dict[str, torch.Tensor]:
    bns = [c.bn for c in dks]
    return {
        "conv.weight": torch.cat([c.conv.weight for c in dks], 0),
        "bn.weight": torch.cat([b.weight for b in bns], 0),
        "bn.bias": torch.cat([b.bias for b in bns], 0),
        "bn.running_mean": torch.cat([b.running_mean for b in bns], 0),
        "bn.running_var": torch.cat([b.running_var for b in bns], 0),
        "bn.num_batches_tracked": bns[0].num_batches_tracked,
    }


def _map_convs(dk: DarknetModel, convs: list[tuple[int, Conv]], targets: list[tuple[str, nn.Module]]) -> dict:
    """Map the cfg's convs (in layer order) onto native modules (in the same order); NotNative where they differ.

    A CrossStage's conv_exp takes two cfg convs (cross part, block part); its conv_transition's input channels are
    reordered from darknet's [route] order to the native [cross, blocks]. A bare nn.Conv2d target (a YOLO
    prediction conv) takes a conv without BN.
    """
    sd: dict[str, torch.Tensor] = {}
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
            sd[f"{name}.weight"], sd[f"{name}.bias"] = m.conv.weight, m.conv.bias
            continue
        if any(not isinstance(m.bn, nn.BatchNorm2d) for _, m in group):
            raise NotNative(f"layer {group[0][0]} has no batch_normalize, {name} has BN")
        if any(_act_key(m.act) != _act_key(mod.act) for _, m in group):
            raise NotNative(f"layer {group[0][0]} activation {group[0][1].act} differs from {name}'s {mod.act}")
        entry = _cat_bn([m for _, m in group])
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
            w = entry["conv.weight"]
            bounds, start = {}, 0
            for s in route.sources:  # darknet's concat order -> native [cross, blocks]
                bounds[s] = (start, start + dk.shapes[s][0])
                start = bounds[s][1]
            (tb,) = set(route.sources) - {cross}
            entry["conv.weight"] = torch.cat([w[:, slice(*bounds[cross])], w[:, slice(*bounds[tb])]], 1)
        if entry["conv.weight"].shape != mod.conv.weight.shape or mod.conv.stride != group[0][1].conv.stride:
            raise NotNative(
                f"layer {group[0][0]} ({tuple(entry['conv.weight'].shape)}, stride {group[0][1].conv.stride}) does "
                f"not fit {name} ({tuple(mod.conv.weight.shape)}, stride {mod.conv.stride})"
            )
        sd.update({f"{name}.{key}": v for key, v in entry.items()})
    if k != len(convs):
        raise NotNative(f"the cfg has {len(convs) - k} convolutions more than the native model")
    return sd


def native_state_dict(dk: DarknetModel, native: CspNet) -> dict[str, torch.Tensor]:
    """Map the cfg model's tensors onto `native`'s keys; NotNative when the two are not the same network."""
    head = _head_conv(dk)
    convs = [(i, m) for i, m in enumerate(dk.layers) if isinstance(m, Conv) and i != head]
    targets = [(n, m) for n, m in native.named_modules() if isinstance(m, ConvBNAct)]
    sd = _map_convs(dk, convs, targets)
    fc = dk.layers[head].conv
    sd["head.fc.weight"] = fc.weight.flatten(1)
    sd["head.fc.bias"] = fc.bias
    return sd


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


def detector_state_dict(dk: DarknetModel, native: nn.Module) -> dict[str, torch.Tensor]:
    """Map a darknet detector's tensors onto a native YoloDetector; NotNative when they are not the same network."""
    modules = list(native.named_modules())
    targets = []
    for prefix in detector_order(native):
        for n, m in modules:
            if n == prefix or n.startswith(prefix + "."):
                if isinstance(m, ConvBNAct) or (n.startswith("head.preds.") and isinstance(m, nn.Conv2d)):
                    targets.append((n, m))
    convs = [(i, m) for i, m in enumerate(dk.layers) if isinstance(m, Conv)]
    sd = _map_convs(dk, convs, targets)
    sd["head.anchors"] = native.head.anchors
    return sd


def yolo_levels(dk: DarknetModel) -> list[int]:
    """The cfg's [yolo] layer indices, strides ascending (largest map first)."""
    return sorted(dk.yolo_layers, key=lambda i: -dk.shapes[i][1])


def detector_args(dk: DarknetModel) -> dict:
    """num_classes, anchors, scale_x_y and new_coords of a darknet detector, strides ascending."""
    yolos = [dk.layers[i] for i in yolo_levels(dk)]
    if len({(y.classes, y.new_coords, y.num_anchors) for y in yolos}) != 1:
        raise NotNative("the [yolo] layers differ in classes, new_coords or anchor count")
    return dict(
        num_classes=yolos[0].classes,
        anchors=tuple(tuple(map(tuple, y.anchors.tolist())) for y in yolos),
        scale_x_y=tuple(y.scale_x_y for y in yolos),
        new_coords=yolos[0].new_coords,
    )


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
        ref = dk.forward_layers(x, keep_all=True)[_head_conv(dk)].flatten(1)
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
    acts = {_act_key(m.act) for i, m in enumerate(dk.layers) if isinstance(m, Conv) and i != _head_conv(dk)}
    acts.discard(("Identity",))
    if acts == {("leaky", 0.1)}:
        kw = dict(act="leaky", leaky_slope=0.1)
    elif acts == {("Mish",)}:
        kw = dict(act="mish")
    else:
        raise NotNative(f"activations {sorted(acts)} have no native equivalent")
    head = dk.layers[_head_conv(dk)].conv
    native = create_model(name, num_classes=head.out_channels, in_chans=dk.in_chans, **kw, **overrides)
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
    name = native_name(cfg)
    if not native or name is None:
        return dk
    try:
        return to_native(dk, name, verify, **NATIVE_ARGS.get(Path(cfg).stem, {})).eval()
    except NotNative as e:
        warnings.warn(f"{cfg} is not exactly {name} ({e}); returning the cfg model", stacklevel=2)
        return dk
