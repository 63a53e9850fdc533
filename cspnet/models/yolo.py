"""YOLO detectors: any zoo backbone (features_only) -> neck (PANet, CSP-PAN or tiny) -> YOLOv3 head, as data.

`create_model("yolov4", num_classes=C)` builds one; `backbone="cspresnext50"` swaps the backbone, `width`/`depth`
scale every stage, neck and head. In train mode the model returns raw per-level logits (the loss decodes them with
`head.decode_boxes`); in eval mode it returns darknet's decoded boxes in OpenCV's row order.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cspnet.errors import ConfigError, InputError
from cspnet.models.net import CspNet, FeatureNet, ModelCfg, check_input
from cspnet.models.registry import build_cfg, model_info, register_model
from cspnet.nn.fuse import fuse_model
from cspnet.nn.layers import ConvBNAct, check_act
from cspnet.nn.necks import PAN, TinyBackbone, TinyNeck
from cspnet.nn.stages import StageCfg

Anchors = tuple[tuple[tuple[float, float], ...], ...]  # per level, per anchor: (w, h) in input pixels

# darknet cfg anchors with their masks applied, strides ascending
YOLOV4_ANCHORS: Anchors = (
    ((12, 16), (19, 36), (40, 28)),
    ((36, 75), (76, 55), (72, 146)),
    ((142, 110), (192, 243), (459, 401)),
)
YOLOV3_ANCHORS: Anchors = (
    ((10, 13), (16, 30), (33, 23)),
    ((30, 61), (62, 45), (59, 119)),
    ((116, 90), (156, 198), (373, 326)),
)
TINY_ANCHORS: Anchors = (((23, 27), (37, 58), (81, 82)), ((81, 82), (135, 169), (344, 319)))  # masks 1,2,3 / 3,4,5
NECKS = ("pan", "csp-pan", "tiny")
TINY_BACKBONE = "yolov4-tiny"


@dataclass(frozen=True)
class YoloCfg:
    """A whole detector. The backbone is a zoo name (its last len(anchors) feature levels feed the neck)."""

    backbone: str = "cspdarknet53"
    backbone_args: tuple[tuple[str, Any], ...] = (("act", "mish"),)  # overrides for the zoo backbone's ModelCfg
    neck: str = "pan"
    neck_chs: tuple[int, ...] = (128, 256, 512)  # per level; the head's 3x3 convs are twice as wide
    neck_depth: int = 2  # conv pairs per neck block (YOLOv4: 1x1-3x3-1x1-3x3-1x1)
    spp: tuple[int, ...] = (5, 9, 13)
    act: str = "leaky"  # neck and head
    leaky_slope: float = 0.1
    anchors: Anchors = YOLOV4_ANCHORS
    scale_x_y: tuple[float, ...] = (1.2, 1.1, 1.05)
    new_coords: bool = False  # Scaled-YOLOv4 box parametrisation: xy = 2 sig - 0.5, wh = (2 sig)^2 anchor
    width: float = 1.0
    depth: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "act", check_act(self.act))
        if self.neck not in NECKS:
            raise ConfigError(f"unknown neck {self.neck!r}; choose one of {', '.join(NECKS)}")
        n = len(self.anchors)
        if len(self.neck_chs) != n or len(self.scale_x_y) != n:
            raise ConfigError(
                f"{n} anchor levels need as many neck_chs and scale_x_y entries, got "
                f"{len(self.neck_chs)} and {len(self.scale_x_y)}"
            )
        if len({len(a) for a in self.anchors}) != 1:
            raise ConfigError("every level needs the same number of anchors")
        if not (self.width > 0 and self.depth > 0):
            raise ConfigError(f"width and depth multipliers must be > 0, got {self.width}, {self.depth}")
        object.__setattr__(self, "anchors", tuple(tuple((float(w), float(h)) for w, h in a) for a in self.anchors))

    @property
    def is_csp(self) -> bool:
        if self.backbone in (TINY_BACKBONE, *_BACKBONES):
            return True
        return model_info(self.backbone).is_csp


def _ch(c: int, width: float) -> int:
    """Scaled channel count, a multiple of 8 (unchanged at width 1 for the multiples of 8 used here)."""
    return c if width == 1.0 else max(8, int(round(c * width / 8)) * 8)


def scale_cfg(cfg: ModelCfg, width: float, depth: float) -> ModelCfg:
    """A zoo backbone with every width times `width` and every stage depth times `depth`."""
    if width == 1.0 and depth == 1.0:
        return cfg
    stages = tuple(
        dataclasses.replace(
            s,
            depth=max(1, round(s.depth * depth)),
            out_chs=_ch(s.out_chs, width),
            block_in_chs=_ch(s.block_in_chs, width) if s.block_in_chs else 0,
        )
        for s in cfg.stages
    )
    return dataclasses.replace(
        cfg, stem=dataclasses.replace(cfg.stem, out_chs=_ch(cfg.stem.out_chs, width)), stages=stages
    )


def _scaled_cspdarknet53(**overrides) -> ModelCfg:
    """Scaled-YOLOv4's (yolov4-csp) backbone: CSPDarknet53 whose first stage is a plain darknet stage."""
    cfg = build_cfg("cspdarknet53", **overrides)
    first = StageCfg(1, 64, 2, block="dark", bottle_ratio=0.5, partial_ratio=1.0)
    return dataclasses.replace(cfg, stages=(first, *cfg.stages[1:]))


_BACKBONES = {"scaled-cspdarknet53": _scaled_cspdarknet53}


def build_backbone(cfg: YoloCfg, in_chans: int = 3) -> nn.Module:
    """The feature extractor: yolov4-tiny's own, or a zoo model's last len(anchors) levels (features_only)."""
    if cfg.backbone == TINY_BACKBONE:
        widths = tuple(_ch(c, cfg.width) for c in (32, 64, 64, 128, 256, 512))
        return TinyBackbone(widths, in_chans, cfg.act, cfg.leaky_slope)
    kw = dict(cfg.backbone_args)
    if cfg.backbone not in _BACKBONES and model_info(cfg.backbone).task != "classify":
        raise ConfigError(f"backbone {cfg.backbone!r} is a {model_info(cfg.backbone).task} model; pick a classifier")
    mcfg = _BACKBONES[cfg.backbone](**kw) if cfg.backbone in _BACKBONES else build_cfg(cfg.backbone, **kw)
    net = CspNet(scale_cfg(mcfg, cfg.width, cfg.depth), num_classes=0, in_chans=in_chans)
    n = len(net.feature_info)
    return FeatureNet(net, tuple(range(n - len(cfg.anchors), n)))


class YoloHead(nn.Module):
    """YOLOv3 head: per level a 3x3 conv and a 1x1 prediction conv; decodes boxes exactly as darknet's [yolo]."""

    def __init__(
        self,
        in_chs: list[int],
        mid_chs: list[int],
        num_classes: int,
        anchors: Anchors,
        strides: tuple[int, ...],
        scale_x_y: tuple[float, ...],
        new_coords: bool = False,
        act: str = "leaky",
        leaky_slope: float = 0.1,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_anchors = len(anchors[0])
        self.strides = tuple(int(s) for s in strides)
        self.scale_x_y = tuple(float(s) for s in scale_x_y)
        self.new_coords = bool(new_coords)
        # With one class the score is the objectness: the loss has no class term (YOLOv5's), so the class logit is
        # never trained and would only scale every score by noise. Darknet does train it (delta_yolo_class) and
        # scores objectness x class probability: its imported models set this True to stay equal to darknet/OpenCV.
        self.one_class_logit = False
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32))  # (L, A, 2), saved with weights
        no = self.num_anchors * (5 + num_classes)
        self.convs = nn.ModuleList(
            ConvBNAct(c, m, 3, act=act, leaky_slope=leaky_slope) for c, m in zip(in_chs, mid_chs)
        )
        self.preds = nn.ModuleList(nn.Conv2d(m, no, 1) for m in mid_chs)
        self._init_bias()

    @torch.no_grad()
    def _init_bias(self) -> None:
        """Objectness prior of ~8 objects per 640x640 image, class prior 0.6/C (YOLOv5's), for a stable start."""
        for s, pred in zip(self.strides, self.preds):
            b = pred.bias.view(self.num_anchors, -1)
            b[:, 4] = math.log(8 / (640 / s) ** 2)
            b[:, 5:] = math.log(0.6 / max(self.num_classes - 0.99, 0.01))

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """Raw logits per level, (B, A, H, W, 5 + C): tx, ty, tw, th, objectness, classes."""
        out = []
        for f, conv, pred in zip(feats, self.convs, self.preds):
            p = pred(conv(f))
            b, _, h, w = p.shape
            out.append(p.view(b, self.num_anchors, 5 + self.num_classes, h, w).permute(0, 1, 3, 4, 2))
        return out

    def decode_boxes(self, raw: torch.Tensor, level: int, img_hw: tuple[int, int] | None = None) -> torch.Tensor:
        """(B, A, H, W, >=4) logits -> (B, A, H, W, 4) cx, cy, w, h in input pixels (differentiable).

        xy = sigmoid(t) * s - (s - 1) / 2 plus the cell, times the stride (img_hw given: input size / map size,
        as darknet); wh = exp(t) * anchor, or with new_coords (2 sigmoid(t))^2 * anchor.
        """
        _, a, h, w = raw.shape[:4]
        s = self.scale_x_y[level]
        sy, sx = (img_hw[0] / h, img_hw[1] / w) if img_hw is not None else (self.strides[level],) * 2
        gy = torch.arange(h, device=raw.device, dtype=raw.dtype).view(h, 1)
        gx = torch.arange(w, device=raw.device, dtype=raw.dtype).view(1, w)
        xy = raw[..., 0:2].sigmoid()
        if s != 1.0:
            xy = xy * s - 0.5 * (s - 1.0)
        cx = (xy[..., 0] + gx) * sx
        cy = (xy[..., 1] + gy) * sy
        anchors = self.anchors[level].to(raw.dtype).view(1, a, 1, 1, 2)
        if self.new_coords:
            wh = 4 * raw[..., 2:4].sigmoid() ** 2 * anchors
        else:
            wh = raw[..., 2:4].exp() * anchors
        return torch.cat([cx.unsqueeze(-1), cy.unsqueeze(-1), wh], -1)

    def decode(self, raws: list[torch.Tensor], img_hw: tuple[int, int]) -> torch.Tensor:
        """Per-level logits -> (B, N, 5 + C): boxes in pixels, objectness and class probabilities.

        Rows level by level, (cell, anchor)-major within a level: OpenCV's order. With one class its probability
        is 1 (score = objectness) unless `one_class_logit` (a darknet model, whose class logit was trained).
        """
        out = []
        for i, raw in enumerate(raws):
            box = self.decode_boxes(raw, i, img_hw)
            probs = raw[..., 4:].sigmoid()
            if self.num_classes == 1 and not self.one_class_logit:
                probs = torch.cat([probs[..., :1], torch.ones_like(probs[..., 1:])], -1)
            y = torch.cat([box, probs], -1)
            out.append(y.permute(0, 2, 3, 1, 4).reshape(y.shape[0], -1, y.shape[-1]))
        return torch.cat(out, 1)


class YoloDetector(nn.Module):
    """Backbone -> neck -> YOLO head. train(): forward == forward_raw; eval(): decoded (B, N, 5 + C)."""

    def __init__(self, cfg: YoloCfg, num_classes: int = 80, in_chans: int = 3) -> None:
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"a detector needs num_classes >= 1, got {num_classes}")
        self.cfg = cfg
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.backbone = build_backbone(cfg, in_chans)
        in_chs, strides = self.backbone.channels, self.backbone.reduction
        if len(in_chs) != len(cfg.anchors):
            raise ConfigError(f"backbone {cfg.backbone} gives {len(in_chs)} levels, the anchors {len(cfg.anchors)}")
        chs = [_ch(c, cfg.width) for c in cfg.neck_chs]
        if cfg.neck == "tiny":
            self.neck = TinyNeck(in_chs, chs, cfg.act, cfg.leaky_slope)
        else:
            depth = max(1, round(cfg.neck_depth * cfg.depth))
            self.neck = PAN(in_chs, chs, depth, cfg.spp, cfg.neck == "csp-pan", cfg.act, cfg.leaky_slope)
        self.head = YoloHead(
            self.neck.out_chs,
            [2 * c for c in chs],
            num_classes,
            cfg.anchors,
            strides,
            cfg.scale_x_y,
            cfg.new_coords,
            cfg.act,
            cfg.leaky_slope,
        )

    @property
    def stride(self) -> int:
        return max(self.head.strides)

    def check_input(self, x: torch.Tensor) -> None:
        check_input(x, self.in_chans)
        s = self.stride
        if x.shape[2] % s or x.shape[3] % s:
            raise InputError(
                f"input {x.shape[2]}x{x.shape[3]} is not a multiple of the stride {s}; letterbox or resize to e.g. "
                f"{max(s, round(x.shape[2] / s) * s)}x{max(s, round(x.shape[3] / s) * s)}"
            )

    def forward_raw(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per level (strides ascending): (B, A, H, W, 5 + C) raw logits."""
        self.check_input(x)
        return self.head(self.neck(self.backbone(x)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor] | torch.Tensor:
        raws = self.forward_raw(x)
        if self.training:
            return raws
        return self.head.decode(raws, (x.shape[2], x.shape[3]))

    def fuse(self) -> YoloDetector:
        """Swap in the fused inference modules (cspnet.nn.fuse: BN folded, oneDNN calls); returns self in eval."""
        return fuse_model(self)


def create_detector(cfg: YoloCfg, num_classes: int = 80, in_chans: int = 3) -> YoloDetector:
    return YoloDetector(cfg, num_classes, in_chans)


def _register(name: str, twin: str | None = None, img_size: int = 416, paper: str = "", **meta):
    return register_model(
        name=name,
        task="detect",
        model_cls=YoloDetector,
        num_classes=80,
        twin=twin,
        img_size=img_size,
        paper=paper,
        **meta,
    )


# The darknet cfgs' networks: equal in params and FLOPs, same outputs on the same .weights (tests/test_yolo.py)
@_register(
    "yolov4",
    params_m=64.363,
    gmacs=64.195,
    twin="yolov4-darknet53",
    img_size=608,
    paper="Bochkovskiy et al. 2020, yolov4.cfg: 43.5 AP COCO",
)
def yolov4() -> YoloCfg:
    return YoloCfg()


@_register("yolov4-tiny", params_m=6.057, gmacs=3.454, img_size=416, paper="AlexeyAB yolov4-tiny.cfg")
def yolov4_tiny() -> YoloCfg:
    return YoloCfg(
        backbone=TINY_BACKBONE,
        backbone_args=(),
        neck="tiny",
        neck_chs=(128, 256),
        anchors=TINY_ANCHORS,
        scale_x_y=(1.05, 1.05),
    )


@_register(
    "yolov4-csp",
    params_m=52.921,
    gmacs=38.477,
    img_size=512,
    paper="Wang et al. 2021 (Scaled-YOLOv4), yolov4-csp.cfg: 47.5 AP @640",
)
def yolov4_csp() -> YoloCfg:
    return YoloCfg(
        backbone="scaled-cspdarknet53",
        neck="csp-pan",
        act="mish",
        scale_x_y=(2.0, 2.0, 2.0),
        new_coords=True,
    )


@_register(
    "cspresnext50-panet-spp",
    params_m=56.943,
    gmacs=23.532,
    twin="resnext50-panet-spp",
    paper="CSPNet paper Table 7: CSPResNeXt50-PANet-SPP, csresnext50-panet-spp.cfg, 38.4 AP @512",
)
def cspresnext50_panet_spp() -> YoloCfg:
    return YoloCfg(
        backbone="cspresnext50",
        backbone_args=(("layout", "darknet"),),
        anchors=YOLOV3_ANCHORS,
        scale_x_y=(1.0, 1.0, 1.0),
    )


# Plain twins: the same neck and head on the plain backbone
@_register(
    "yolov4-darknet53",
    params_m=78.331,
    gmacs=79.715,
    twin="yolov4",
    img_size=608,
    paper="yolov4 with the plain Darknet53 backbone (mish)",
)
def yolov4_darknet53() -> YoloCfg:
    return YoloCfg(backbone="darknet53")


@_register(
    "resnext50-panet-spp",
    params_m=61.414,
    gmacs=27.652,
    twin="cspresnext50-panet-spp",
    paper="cspresnext50-panet-spp with plain ResNeXt-50",
)
def resnext50_panet_spp() -> YoloCfg:
    return dataclasses.replace(cspresnext50_panet_spp(), backbone="resnext50_32x4d", backbone_args=())


# CPU-sized members: width 0.25, depth 0.33 (backbone stages and neck blocks)
@_register(
    "yolov4-s",
    params_m=2.854,
    gmacs=1.355,
    twin="yolov4-darknet53-s",
    paper="yolov4 at width 0.25, depth 0.33 (CPU-sized)",
)
def yolov4_s() -> YoloCfg:
    return dataclasses.replace(yolov4(), width=0.25, depth=0.33)


@_register(
    "yolov4-darknet53-s",
    params_m=2.976,
    gmacs=1.422,
    twin="yolov4-s",
    paper="yolov4-darknet53 at width 0.25, depth 0.33 (CPU-sized)",
)
def yolov4_darknet53_s() -> YoloCfg:
    return dataclasses.replace(yolov4_darknet53(), width=0.25, depth=0.33)


@_register("yolov4-tiny-s", params_m=1.565, gmacs=0.889, paper="yolov4-tiny at width 0.5 (CPU-sized)")
def yolov4_tiny_s() -> YoloCfg:
    return dataclasses.replace(yolov4_tiny(), width=0.5)
