"""Which native model a darknet cfg is, by structure: the cfg's layer graph equals the one `emit.cfg_text` writes.

The class count, anchors, scale_x_y, new_coords and input size come from the cfg; everything else (layer types,
widths, kernels, strides, groups, activations, [route]/[shortcut] wiring) must be equal. So darknet's custom-training
recipe (a copy named yolo-obj.cfg with classes=3, filters=24 and new anchors) maps onto the native detector.
"""

from __future__ import annotations

from torch import nn

from cspnet.errors import ConfigError
from cspnet.interop.darknet.emit import cfg_sections, on_meta
from cspnet.interop.darknet.model import (
    AvgPool,
    Conv,
    DarknetModel,
    MaxPool,
    Route,
    Shortcut,
    Softmax,
    Upsample,
    Yolo,
)

# classifiers with a darknet twin: (native name, architecture arguments); their activation comes from the cfg
CLASSIFIERS = (
    ("cspdarknet53", {}),
    ("darknet53", {}),
    ("cspresnet50", {"layout": "darknet"}),
    ("cspresnext50", {"layout": "darknet"}),
)


class NotNative(ConfigError):
    """The cfg does not map exactly onto the native model."""


def act_key(act: nn.Module) -> tuple:
    if isinstance(act, nn.LeakyReLU):
        return ("leaky", round(act.negative_slope, 6))
    return (type(act).__name__,)


def head_conv(dk: DarknetModel) -> int:
    """Index of the classifier conv: [avgpool] -> 1x1 conv without BN -> optional [softmax] at the end."""
    layers = list(dk.layers)
    end = len(layers) - 1 if isinstance(layers[-1], Softmax) else len(layers)
    i = end - 1
    ok = i >= 1 and isinstance(layers[i], Conv) and isinstance(layers[i - 1], AvgPool)
    if not ok or layers[i].conv.kernel_size != (1, 1) or layers[i].conv.bias is None:
        raise NotNative("the cfg does not end in [avgpool] -> 1x1 [convolutional] (-> [softmax])")
    return i


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
        anchors=tuple(y.anchor_pairs for y in yolos),
        scale_x_y=tuple(y.scale_x_y for y in yolos),
        new_coords=yolos[0].new_coords,
    )


def layer_key(layer: nn.Module) -> tuple:
    """What a layer computes, apart from its weights and the cfg's own classes/anchors values."""
    if isinstance(layer, Conv):
        c = layer.conv
        bn = isinstance(layer.bn, nn.BatchNorm2d)
        return (
            "conv",
            c.in_channels,
            c.out_channels,
            c.kernel_size,
            c.stride,
            c.padding,
            c.groups,
            bn,
            act_key(layer.act),
        )
    if isinstance(layer, Route):
        return ("route", layer.sources, layer.groups, layer.group_id)
    if isinstance(layer, Shortcut):
        return ("shortcut", layer.sources, act_key(layer.act))
    if isinstance(layer, MaxPool):
        return ("maxpool", layer.size, layer.stride, layer.padding)
    if isinstance(layer, Upsample):
        return ("upsample", layer.stride, layer.scale)
    if isinstance(layer, Yolo):
        return ("yolo", layer.num_anchors, layer.classes, layer.new_coords)
    if isinstance(layer, Softmax):
        return ("softmax", layer.groups, layer.temperature)
    if isinstance(layer, AvgPool):
        return ("avgpool",)
    return (layer.kind,)  # connected, dropout, cost: never written for a native model, so never equal


def structure(dk: DarknetModel) -> list[tuple]:
    return [layer_key(layer) for layer in dk.layers]


def first_difference(a: DarknetModel, b: DarknetModel) -> str:
    """Where cfg `a` and cfg `b` first differ, in words."""
    sa, sb = structure(a), structure(b)
    for i, (x, y) in enumerate(zip(sa, sb)):
        if x != y:
            return f"layer {i} is {a.layers[i].kind} {a.layers[i].desc}, not {b.layers[i].kind} {b.layers[i].desc}"
    return f"{len(sa)} layers, not {len(sb)}"


def classifier_args(dk: DarknetModel) -> dict:
    """num_classes and activation of a darknet classifier (leaky 0.1 or mish throughout)."""
    head = head_conv(dk)
    acts = {act_key(m.act) for i, m in enumerate(dk.layers) if isinstance(m, Conv) and i != head}
    acts.discard(("Identity",))
    if acts == {("leaky", 0.1)}:
        kw = dict(act="leaky", leaky_slope=0.1)
    elif acts == {("Mish",)}:
        kw = dict(act="mish")
    else:
        raise NotNative(f"activations {sorted(acts)} have no native equivalent")
    return dict(num_classes=dk.layers[head].conv.out_channels, **kw)


def candidates(dk: DarknetModel) -> list[tuple[str, dict, dict]]:
    """(native name, architecture arguments, arguments from the cfg) to try, in a fixed order."""
    from cspnet.models import build_cfg, list_models

    try:
        if dk.is_detector:
            kw = detector_args(dk)
            levels = len(kw["anchors"])
            names = [n for n in sorted(list_models(task="detect")) if len(build_cfg(n).anchors) == levels]
            return [(name, {}, kw) for name in names]
        kw = classifier_args(dk)
    except NotNative:
        return []
    return [(name, args, kw) for name, args in CLASSIFIERS]


def emitted(name: str, args: dict, kw: dict, dk: DarknetModel) -> DarknetModel:
    """The cfg model the native `name` writes, on the meta device, at the cfg's input size."""
    from cspnet.models import create_model

    with on_meta():
        native = create_model(name, in_chans=dk.in_chans, **args, **kw)
        return DarknetModel(cfg_sections(native, 32), dk.img_size)


def match_native(dk: DarknetModel) -> tuple[str, dict] | None:
    """(native name, architecture arguments) of the native model whose cfg is `dk`'s, or None."""
    want = structure(dk)
    convs = sum(isinstance(m, Conv) for m in dk.layers)
    for name, args, kw in candidates(dk):
        try:
            got = emitted(name, args, kw, dk)
        except ConfigError:  # e.g. 3 [yolo] levels for a 2-level detector, or a stride the cfg's size lacks
            continue
        if sum(isinstance(m, Conv) for m in got.layers) == convs and structure(got) == want:
            return name, args
    return None
