"""Native model -> darknet `.cfg`: the layers darknet runs for a native detector or classifier.

Layers come in the order the authors' cfgs list them (yolov4.cfg, yolov4-tiny.cfg, yolov4-csp.cfg,
csresnext50-panet-spp.cfg, the CSPNet classifiers): a CSP stage's split conv as two 1x1 convs (cross part, then
block part after a [route] back to the stage input), its fusion as a [route] of [blocks, cross part]; each YOLO
level's head and [yolo] right after the neck reaches it. So `from_darknet` maps the text back onto the native model
(native.py), and the tests check it against the authors' files layer by layer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from cspnet.errors import ConfigError
from cspnet.interop.darknet.cfg import Section, parse_cfg_text
from cspnet.models.net import CspNet, FeatureNet
from cspnet.nn.blocks import BasicBlock, Bottleneck, DarkBlock, PadChannels
from cspnet.nn.layers import ConvBNAct
from cspnet.nn.necks import PAN, SPP, SPPCSP, CSPFuse, PlainDarkBlock, SPPBlock, TinyBackbone, TinyNeck, TinyStage
from cspnet.nn.stages import CrossStage

_ACTS = {
    nn.Identity: "linear",
    nn.ReLU: "relu",
    nn.Mish: "mish",
    nn.SiLU: "swish",
    nn.Sigmoid: "logistic",
    nn.Tanh: "tanh",
}

# [yolo] training options of the authors' yolov4.cfg and (new_coords) yolov4-csp.cfg; inference ignores them
_YOLO_TRAIN = dict(
    jitter=".3", ignore_thresh=".7", truth_thresh="1", random="1", iou_thresh="0.213", cls_normalizer="1.0",
    iou_normalizer="0.07", iou_loss="ciou", nms_kind="greedynms", beta_nms="0.6", max_delta="5",
)  # fmt: skip
_YOLO_TRAIN_NEW_COORDS = dict(
    jitter=".1", ignore_thresh=".7", truth_thresh="1", iou_thresh="0.2", iou_normalizer="0.05",
    cls_normalizer="0.5", obj_normalizer="1.0", iou_loss="ciou", nms_kind="diounms", beta_nms="0.6", max_delta="5",
)  # fmt: skip


class _SkipRandomInit(TorchFunctionMode):
    """Random init of meta tensors is a no-op, but Tensor.normal_ there imports torch._dynamo (seconds): skip it."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in ("normal_", "uniform_") and args and getattr(args[0], "is_meta", False):
            return args[0]
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def on_meta() -> Iterator[None]:
    """Build modules on the meta device (shapes only), fast."""
    with torch.device("meta"), _SkipRandomInit():
        yield


def act_name(act: nn.Module, where: str) -> str:
    """The darknet name of an activation module; darknet's leaky has slope 0.1 and no other."""
    if isinstance(act, nn.LeakyReLU):
        if abs(act.negative_slope - 0.1) > 1e-9:
            raise ConfigError(
                f"{where}: leaky slope {act.negative_slope:g}; darknet's leaky is fixed at 0.1 (build with leaky_slope=0.1)"
            )
        return "leaky"
    name = _ACTS.get(type(act))
    if name is None:
        raise ConfigError(f"{where}: activation {type(act).__name__} has no darknet equivalent")
    return name


class CfgWriter:
    """Appends darknet sections; every layer reads the previous one, so `take` inserts a [route] where needed."""

    def __init__(self, model: nn.Module) -> None:
        self.names = {m: n for n, m in model.named_modules()}
        self.layers: list[tuple[str, dict[str, str]]] = []

    @property
    def last(self) -> int:
        return len(self.layers) - 1

    def add(self, kind: str, **opts) -> int:
        self.layers.append((kind, {k: str(v) for k, v in opts.items()}))
        return self.last

    def rel(self, src: int) -> int:
        """`src` relative to the layer about to be added (darknet's negative indices)."""
        return src - len(self.layers)

    def take(self, src: int) -> None:
        if src != self.last:
            self.route([src])

    def route(self, srcs: list[int], groups: int = 1, group_id: int = 0) -> int:
        opts = {"layers": ",".join(str(self.rel(s)) for s in srcs)}
        if groups > 1:
            opts.update(groups=groups, group_id=group_id)
        return self.add("route", **opts)

    def conv(self, m: ConvBNAct, src: int, rows: tuple[int, int] | None = None) -> int:
        """A ConvBNAct (or its output rows [rows[0], rows[1]): half of a CSP split conv)."""
        where = self.names.get(m, type(m).__name__)
        if not isinstance(m, ConvBNAct):
            raise ConfigError(f"{where} ({type(m).__name__}) has no darknet layer; darknet convs are conv-BN-act")
        c = m.conv
        k, s, p = c.kernel_size[0], c.stride[0], c.padding[0]
        if c.kernel_size[1] != k or c.stride[1] != s or c.padding[1] != p or c.dilation != (1, 1):
            raise ConfigError(f"{where}: darknet convs are square and not dilated")
        self.take(src)
        filters = c.out_channels if rows is None else rows[1] - rows[0]
        opts = dict(batch_normalize=1, filters=filters, size=k, stride=s)
        opts.update({"pad": 1} if p == k // 2 else {"padding": p})
        if c.groups > 1:
            opts["groups"] = c.groups
        return self.add("convolutional", **opts, activation=act_name(m.act, where))

    def shortcut(self, src: int, act: nn.Module | None = None) -> int:
        """Add layer `src` to the previous one, then `act`."""
        return self.add("shortcut", **{"from": self.rel(src)}, activation=act_name(act or nn.Identity(), "shortcut"))

    def maxpool(self, m: nn.MaxPool2d, src: int) -> int:
        k, s, p = (v if isinstance(v, int) else v[0] for v in (m.kernel_size, m.stride, m.padding))
        # darknet pads size-1 (padding//2 before, the rest after): torch's floor mode with p = (k-1)/2, or k=s=2 ceil
        if not ((p * 2 == k - 1 and not m.ceil_mode) or (k == s == 2 and p == 0 and m.ceil_mode)):
            raise ConfigError(f"{self.names.get(m, 'a max pool')}: MaxPool2d({k}, {s}, {p}) has no darknet twin")
        self.take(src)
        return self.add("maxpool", size=k, stride=s)

    def text(self, net: dict[str, str]) -> str:
        out = ["[net]", *(f"{k}={v}" for k, v in net.items())]
        for kind, opts in self.layers:
            out += ["", f"[{kind}]", *(f"{k}={v}" for k, v in opts.items())]
        return "\n".join(out) + "\n"


def _emit(w: CfgWriter, m: nn.Module, src: int) -> int:
    """Write module `m` reading layer `src`; returns its output layer."""
    if isinstance(m, ConvBNAct):
        return w.conv(m, src)
    if isinstance(m, nn.Sequential):
        for child in m:
            src = _emit(w, child, src)
        return src
    if isinstance(m, nn.Identity):
        return src
    if isinstance(m, nn.MaxPool2d):
        return w.maxpool(m, src)
    if isinstance(m, CrossStage):
        return _cross_stage(w, m, src)
    if isinstance(m, DarkBlock):
        _emit(w, nn.Sequential(m.conv1, m.conv2), src)
        return w.shortcut(src)
    if isinstance(m, (Bottleneck, BasicBlock)):
        convs = [m.conv1, m.conv2] + ([m.conv3] if isinstance(m, Bottleneck) else [])
        out = _emit(w, nn.Sequential(*convs), src)
        if isinstance(m.downsample, ConvBNAct):  # projection: [route] to the input, 1x1, then add the branch
            w.conv(m.downsample, src)
            return w.shortcut(out, m.act3 if isinstance(m, Bottleneck) else m.act2)
        if m.downsample is not None and not isinstance(m.downsample, PadChannels):
            raise ConfigError(f"{w.names.get(m)}: shortcut {type(m.downsample).__name__} has no darknet layer")
        return w.shortcut(src, m.act3 if isinstance(m, Bottleneck) else m.act2)  # PadChannels: old darknet's add
    if isinstance(m, PlainDarkBlock):
        return _emit(w, nn.Sequential(m.conv1, m.conv2), src)
    if isinstance(m, SPP):  # separate pools: the cascade in SPP.forward computes the same maxima
        pools = [w.maxpool(nn.MaxPool2d(k, 1, k // 2), src) for k in m.sizes]
        return w.route([*pools[::-1], src])
    if isinstance(m, SPPBlock):
        return _emit(w, nn.Sequential(m.pre, m.spp, m.post), src)
    if isinstance(m, SPPCSP):
        cross = w.conv(m.cross, src)
        x = _emit(w, nn.Sequential(m.pre, m.spp, m.post), src)
        return w.conv(m.transition, w.route([x, cross]))
    if isinstance(m, CSPFuse):
        x = w.conv(m.conv, src)
        cross = w.conv(m.cross, x)
        y = _emit(w, m.blocks, x)
        return w.conv(m.transition, w.route([y, cross]))
    raise ConfigError(
        f"{w.names.get(m, '')} ({type(m).__name__}) has no darknet layers; darknet export covers the YOLOv4 detectors "
        "and the CSPDarknet/CSPResNe(X)t/Darknet classifiers"
    )


def _cross_stage(w: CfgWriter, m: CrossStage, src: int) -> int:
    if isinstance(m.conv_down, nn.AvgPool2d):
        raise ConfigError(f"{w.names.get(m)}: an average-pool downsampling has no darknet layer")
    x = _emit(w, m.conv_down, src)
    if m.split is None:
        return _emit(w, m.blocks, x)
    if not isinstance(m.conv_exp, ConvBNAct):
        raise ConfigError(f"{w.names.get(m)}: a stage without split conv (split_conv=False) has no darknet layers")
    cross_chs, block_chs = m.split
    cross = w.conv(m.conv_exp, x, (0, cross_chs))
    y = _emit(w, m.blocks, w.conv(m.conv_exp, x, (cross_chs, cross_chs + block_chs)))
    if m.conv_transition_b is not None:
        y = w.conv(m.conv_transition_b, y)
    if m.conv_transition is None:  # fusion "last": the concat is the output, in the native order
        return w.route([cross, y])
    return w.conv(m.conv_transition, w.route([y, cross]))  # darknet's order; native.py reorders the inputs


def _backbone(w: CfgWriter, m: nn.Module) -> list[int]:
    """Write a detector's backbone; returns the layers of its feature levels, shallow to deep."""
    if isinstance(m, TinyBackbone):
        x = _emit(w, m.stem, -1)
        for stage in m.stages:
            x, t = _tiny_stage(w, stage, x)
        return [t, w.conv(m.conv, x)]
    if isinstance(m, FeatureNet):
        levels = [_emit(w, m.stem, -1)]
        for stage in m.stages:
            levels.append(_emit(w, stage, levels[-1]))
        return [levels[i] for i in m.out_indices]
    raise ConfigError(f"backbone {type(m).__name__} has no darknet layers")


def _tiny_stage(w: CfgWriter, m: TinyStage, src: int) -> tuple[int, int]:
    x = w.conv(m.conv, src)
    w.route([x], groups=2, group_id=1)
    b1 = w.conv(m.conv1, w.last)
    b2 = w.conv(m.conv2, b1)
    t = w.conv(m.transition, w.route([b2, b1]))
    w.route([x, t])
    return w.maxpool(m.pool, w.last), t


def _anchors(model: nn.Module) -> str:
    """All levels' anchors; the head's buffer (k-means anchors live there), the cfg's for a meta-device model."""
    a = model.head.anchors
    values = [v for level in model.cfg.anchors for wh in level for v in wh] if a.is_meta else a.reshape(-1).tolist()
    return ", ".join(f"{v:g}" for v in values)


def _level(w: CfgWriter, model: nn.Module, i: int, src: int, classes: int) -> None:
    """Head of level i (a 3x3 conv, the prediction conv) and its [yolo] layer."""
    head = model.head
    w.conv(head.convs[i], src)
    pred = head.preds[i]
    a = head.num_anchors
    act = "logistic" if head.new_coords else "linear"
    if pred.kernel_size != (1, 1) or pred.bias is None:
        raise ConfigError(f"head.preds.{i}: a YOLO prediction conv is a 1x1 conv with bias")
    w.add("convolutional", size=1, stride=1, pad=1, filters=a * (5 + classes), activation=act)
    opts = dict(mask=",".join(str(i * a + j) for j in range(a)), anchors=_anchors(model), classes=classes)
    opts["num"] = a * len(head.strides)
    opts.update(_YOLO_TRAIN_NEW_COORDS if head.new_coords else _YOLO_TRAIN)
    if head.scale_x_y[i] != 1.0:
        opts["scale_x_y"] = f"{head.scale_x_y[i]:g}"
    if head.new_coords:
        opts["new_coords"] = 1
    w.add("yolo", **opts)


def _detector(w: CfgWriter, model: nn.Module, classes: int) -> None:
    feats = _backbone(w, model.backbone)
    neck = model.neck
    if isinstance(neck, TinyNeck):
        top = w.conv(neck.top, feats[1])
        _level(w, model, 1, top, classes)
        w.conv(neck.reduce, top)
        up = w.add("upsample", stride=2)
        _level(w, model, 0, w.route([up, feats[0]]), classes)
        return
    if not isinstance(neck, PAN):
        raise ConfigError(f"neck {type(neck).__name__} has no darknet layers")
    x = _emit(w, neck.top, feats[-1])
    inner = [x]
    for i in reversed(range(len(neck.reduce))):
        w.conv(neck.reduce[i], x)
        up = w.add("upsample", stride=2)
        lat = w.conv(neck.lateral[i], feats[i])
        x = _emit(w, neck.up_blocks[i], w.route([lat, up]))
        inner.insert(0, x)
    _level(w, model, 0, x, classes)
    for i in range(len(neck.down)):
        d = w.conv(neck.down[i], x)
        x = _emit(w, neck.down_blocks[i], w.route([d, inner[i + 1]]))
        _level(w, model, i + 1, x, classes)


def _classifier(w: CfgWriter, model: CspNet, classes: int) -> None:
    if model.norm is not None:
        raise ConfigError("a classifier with head_norm (pre-activation nets) has no darknet layers")
    x = _emit(w, model.stem, -1)
    _emit(w, model.stages, x)
    if not isinstance(model.head.fc, nn.Linear):
        raise ConfigError("the model has no classifier (num_classes=0); darknet classifiers end in one")
    w.add("avgpool")
    w.add("convolutional", filters=classes, size=1, stride=1, pad=1, activation="linear")
    w.add("softmax", groups=1)


def net_options(model: nn.Module, img: int, classes: int, detector: bool) -> dict[str, str]:
    """[net]: the input, and darknet's training recipe (max_batches = 2000 per class, >= 6000; steps at 80%, 90%)."""
    net = dict(batch=64, subdivisions=16, width=img, height=img, channels=model.in_chans)
    net.update(momentum=0.949, decay=0.0005, angle=0, saturation=1.5, exposure=1.5, hue=0.1)
    if detector:
        steps = max(6000, 2000 * classes)
        net.update(learning_rate=0.001, burn_in=1000, max_batches=steps, policy="steps")
        net.update(steps=f"{steps * 8 // 10},{steps * 9 // 10}", scales=".1,.1", mosaic=1)
    else:
        net.update(learning_rate=0.1, policy="poly", power=4, max_batches=1600000)
    return {k: str(v) for k, v in net.items()}


def cfg_text(model: nn.Module, img: int | None = None, num_classes: int | None = None) -> str:
    """The darknet cfg of a native detector (YoloDetector) or classifier (CspNet), as text.

    img: [net] width and height (default: the model's zoo input size); num_classes: write the class-dependent
    layers for another class count (the layout of a `.weights` file trained on it). Raises ConfigError, naming the
    module, for what darknet cannot express (a fused model, leaky slopes other than 0.1, pre-activation blocks).
    """
    detector = hasattr(model, "head") and hasattr(model.head, "decode_boxes")
    if not detector and not isinstance(model, CspNet):
        raise ConfigError(f"{type(model).__name__} has no darknet cfg; pass a YOLO detector or a CspNet classifier")
    if not any(isinstance(m, ConvBNAct) for m in model.modules()):
        raise ConfigError("the model is fused (BN folded into its convs); write it as darknet before .fuse()")
    classes = num_classes or (model.num_classes if detector else getattr(model.head.fc, "out_features", 0))
    stride = model.stride if detector else 32
    if img is None:
        from cspnet.models import model_info

        name = getattr(model, "name", None)
        img = model_info(name).img_size if name else 416
    if img % stride:
        raise ConfigError(f"input size {img} is not a multiple of the model's stride {stride}")
    w = CfgWriter(model)
    (_detector if detector else _classifier)(w, model, classes)
    return w.text(net_options(model, img, classes, detector))


def cfg_sections(model: nn.Module, img: int | None = None, num_classes: int | None = None) -> list[Section]:
    """`cfg_text` parsed, as `parse_cfg` returns a file."""
    return parse_cfg_text(cfg_text(model, img, num_classes), f"<{getattr(model, 'name', 'model')}>")


def darknet_layout(model: nn.Module, num_classes: int | None = None):
    """The cfg model of `model`'s darknet layout on the meta device (shapes only: instant even for yolov4)."""
    from cspnet.interop.darknet.model import DarknetModel

    stride = getattr(model, "stride", 32)
    with on_meta():
        return DarknetModel(cfg_sections(model, 2 * stride, num_classes))
