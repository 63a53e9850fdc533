"""The one generic model: a stem, a list of stages, a classifier head. Architecture lives in ModelCfg."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cspnet.errors import ConfigError, InputError
from cspnet.nn.fuse import fuse_model
from cspnet.nn.layers import ConvBNAct, check_act, make_act
from cspnet.nn.stages import CrossStage, StageCfg
from cspnet.nn.stems import PeleeStem

STEMS = ("conv", "pelee")


def check_input(x: torch.Tensor, in_chans: int, fix: str | None = None) -> None:
    """One-line InputError unless `x` is an image batch (N, in_chans, H, W); `fix` says how to fix it (default: for
    a model from create_model)."""
    if x.dim() != 4 or x.shape[1] != in_chans:
        fix = fix or f"pass in_chans={x.shape[1] if x.dim() == 4 else '?'} to create_model or convert the images"
        raise InputError(f"expected a batch shaped (N, {in_chans}, H, W), got {tuple(x.shape)}; {fix}")


@dataclass(frozen=True)
class StemCfg:
    """The stem: one kxk stride conv, then an optional 3x3 stride-2 max pool; kind="pelee": PeleeNet's stem block."""

    out_chs: int = 64
    kernel_size: int = 7
    stride: int = 2
    pool: bool = True
    pool_size: int = 3  # 3: 3x3 stride-2 pad-1 (torchvision, timm); 2: darknet's [maxpool] size=2 stride=2
    kind: str = "conv"  # "conv" or "pelee" (stride 4; kernel_size, stride and pool unused)

    def __post_init__(self) -> None:
        if self.kind not in STEMS:
            raise ConfigError(f"unknown stem kind {self.kind!r}; choose one of {', '.join(STEMS)}")


@dataclass(frozen=True)
class ModelCfg:
    """A whole classifier. `small_input` drops the stem's downsampling for 32x32 images."""

    stem: StemCfg
    stages: tuple[StageCfg, ...]
    act: str = "relu"
    leaky_slope: float = 0.01
    small_input: bool = False
    drop_rate: float = 0.0
    head_norm: bool = False  # BN-act on the last features before pooling (pre-activation nets: DenseNet's norm5)

    def __post_init__(self) -> None:
        object.__setattr__(self, "act", check_act(self.act))


class CspNet(nn.Module):
    """Stem -> stages -> global pool -> linear; every zoo model, CSP or plain, is this class with its ModelCfg.

    The published CSP models reproduce their authors' design and differ from their plain twins in more than the
    split (cspresnet50 vs resnet50: widths, ratios, activation); `create_model("resnet50", partial_ratio=0.5)` is
    the one-knob CSP-isation, where only gamma changes.
    """

    def __init__(self, cfg: ModelCfg, num_classes: int = 1000, in_chans: int = 3) -> None:
        super().__init__()
        self.cfg = cfg
        self.in_chans = in_chans
        self.num_classes = num_classes
        kw = dict(act=cfg.act, leaky_slope=cfg.leaky_slope)

        stem = cfg.stem
        stem_stride = 1 if cfg.small_input else stem.stride
        self.stem = nn.Sequential()
        if stem.kind == "pelee":
            stem_stride = 1 if cfg.small_input else 4
            self.stem.add_module("block", PeleeStem(in_chans, stem.out_chs, stem_stride, **kw))
        else:
            self.stem.add_module("conv1", ConvBNAct(in_chans, stem.out_chs, stem.kernel_size, stem_stride, **kw))
        reduction = stem_stride
        if stem.pool and stem.kind == "conv" and not cfg.small_input:
            pool = nn.MaxPool2d(3, 2, 1) if stem.pool_size == 3 else nn.MaxPool2d(2, 2, ceil_mode=True)
            self.stem.add_module("pool", pool)
            reduction *= 2
        self.feature_info = [dict(num_chs=stem.out_chs, reduction=reduction, module="stem")]

        prev = stem.out_chs
        self.stages = nn.Sequential()
        for i, scfg in enumerate(cfg.stages):
            stage = CrossStage(prev, scfg, **kw)
            self.stages.add_module(str(i), stage)
            prev = stage.out_chs
            reduction *= scfg.stride
            self.feature_info.append(dict(num_chs=prev, reduction=reduction, module=f"stages.{i}"))

        self.num_features = prev
        self.norm = nn.Sequential(nn.BatchNorm2d(prev), make_act(cfg.act, cfg.leaky_slope)) if cfg.head_norm else None
        self.head = nn.Sequential()
        self.head.add_module("global_pool", nn.AdaptiveAvgPool2d(1))
        self.head.add_module("flatten", nn.Flatten(1))
        self.head.add_module("drop", nn.Dropout(cfg.drop_rate) if cfg.drop_rate else nn.Identity())
        self.head.add_module("fc", nn.Linear(prev, num_classes) if num_classes else nn.Identity())
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)
        for m in self.modules():  # residual branches start as identity: stabler early training
            if hasattr(m, "zero_init_last"):
                m.zero_init_last()

    def check_input(self, x: torch.Tensor) -> None:
        check_input(x, self.in_chans)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.stages(self.stem(x))
        return x if self.norm is None else self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head.drop(self.head.flatten(self.head.global_pool(x)))
        return x if pre_logits else self.head.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a fresh one for `num_classes` (0 = no classifier)."""
        self.num_classes = num_classes
        self.head.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def fuse(self) -> CspNet:
        """Swap in the fused inference modules (cspnet.nn.fuse: BN folded, oneDNN calls); returns self in eval."""
        return fuse_model(self)


class FeatureNet(nn.Module):
    """features_only=True: returns the maps of the chosen levels, shallow to deep, for a neck."""

    def __init__(self, model: CspNet, out_indices: tuple[int, ...] | None = None) -> None:
        super().__init__()
        n = len(model.feature_info)
        out_indices = tuple(range(n)) if out_indices is None else tuple(out_indices)
        bad = [i for i in out_indices if not -n <= i < n]
        if bad:
            raise ConfigError(f"out_indices {bad} out of range; this model has levels 0..{n - 1}")
        self.out_indices = tuple(sorted(i % n for i in out_indices))
        self.in_chans = model.in_chans
        self.check_input = model.check_input
        self.stem = model.stem
        last = max(self.out_indices)
        self.stages = nn.Sequential(*list(model.stages)[:last])
        self.feature_info = [model.feature_info[i] for i in self.out_indices]

    @property
    def channels(self) -> list[int]:
        return [f["num_chs"] for f in self.feature_info]

    @property
    def reduction(self) -> list[int]:
        return [f["reduction"] for f in self.feature_info]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.check_input(x)
        x = self.stem(x)
        outs = [x] if 0 in self.out_indices else []
        for i, stage in enumerate(self.stages, start=1):
            x = stage(x)
            if i in self.out_indices:
                outs.append(x)
        return outs

    def fuse(self) -> FeatureNet:
        """Swap in the fused inference modules (cspnet.nn.fuse); returns self in eval mode.

        The stem is shared with the model this view was made from, so that model's stem is fused too.
        """
        return fuse_model(self)
