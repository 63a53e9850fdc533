"""The model registry: a decorator names each variant, `create_model` builds it."""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import inspect
from collections.abc import Callable, Iterator
from pathlib import Path

from torch import nn

from cspnet.errors import ConfigError
from cspnet.models.info import ModelInfo
from cspnet.models.net import CspNet, FeatureNet, ModelCfg
from cspnet.models.weights import load_backbone, load_pretrained
from cspnet.nn.stages import StageCfg

_REGISTRY: dict[str, ModelInfo] = {}


def register_model(name: str | None = None, **meta) -> Callable[[Callable[[], ModelCfg]], Callable[[], ModelCfg]]:
    """Register a function returning a ModelCfg under `name` (default: its own name), with metadata."""

    def wrap(fn: Callable[[], ModelCfg]) -> Callable[[], ModelCfg]:
        key = name or fn.__name__
        _REGISTRY[key] = ModelInfo(name=key, build_cfg=fn, **meta)
        return fn

    return wrap


def iter_models(pattern: str = "*", task: str | None = None) -> Iterator[ModelInfo]:
    """The ModelInfo of every registered model whose name matches a shell-style pattern, by name; None: every task."""
    for name in sorted(_REGISTRY):
        info = _REGISTRY[name]
        if fnmatch.fnmatch(name, pattern) and task in (None, info.task):
            yield info


def list_models(pattern: str = "*", task: str | None = "classify") -> list[str]:
    """Registered model names matching a shell-style pattern, sorted; of one task ("classify", "detect"), None: all."""
    return [info.name for info in iter_models(pattern, task)]


def model_info(name: str) -> ModelInfo:
    """Metadata of a registered model; unknown names get the closest matches."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "run `cspnet models` for the list"
        raise ConfigError(f"unknown model {name!r}; {hint}") from None


_MODEL_FIELDS = {f.name for f in dataclasses.fields(ModelCfg)} - {"stem", "stages"}
_STAGE_FIELDS = {f.name for f in dataclasses.fields(StageCfg)} - {"depth", "out_chs", "stride"}


def apply_overrides(cfg: ModelCfg, overrides: dict) -> ModelCfg:
    """Overlay user overrides: model fields (act, small_input, ...) and per-stage fields for all stages."""
    if not isinstance(cfg, ModelCfg):  # another task's config dataclass (e.g. YoloCfg): its own fields
        fields = {f.name for f in dataclasses.fields(cfg)}
        unknown = set(overrides) - fields
        if unknown:
            raise ConfigError(f"unknown override(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(fields))}")
        if "backbone" in overrides and "backbone_args" in fields:  # a swapped backbone starts from its zoo defaults
            overrides = {"backbone_args": (), **overrides}
        return dataclasses.replace(cfg, **overrides)
    unknown = set(overrides) - _MODEL_FIELDS - _STAGE_FIELDS
    if unknown:
        valid = ", ".join(sorted(_MODEL_FIELDS | _STAGE_FIELDS))
        raise ConfigError(f"unknown override(s) {', '.join(sorted(unknown))}; valid: {valid}")
    stage_kw = {k: v for k, v in overrides.items() if k in _STAGE_FIELDS}
    model_kw = {k: v for k, v in overrides.items() if k in _MODEL_FIELDS}
    stages = tuple(dataclasses.replace(s, **stage_kw) for s in cfg.stages) if stage_kw else cfg.stages
    return dataclasses.replace(cfg, stages=stages, **model_kw)


def build_cfg(name: str, **overrides) -> ModelCfg:
    """The ModelCfg of a registered model with overrides applied; builder arguments (e.g. layout) go to the builder."""
    info = model_info(name)
    params = inspect.signature(info.build_cfg).parameters
    builder_kw = {k: overrides.pop(k) for k in list(overrides) if k in params}
    return apply_overrides(info.build_cfg(**builder_kw), overrides)


def load_detector_backbone(model: nn.Module, spec: str | Path | bool) -> None:
    """Classification weights of a detector's zoo backbone into it (create_model's `pretrained_backbone`)."""
    backbone = getattr(getattr(model, "cfg", None), "backbone", None)
    if not hasattr(model, "backbone") or not isinstance(backbone, str):
        raise ConfigError(f"pretrained_backbone is for detectors; {model.name} is not one (use pretrained)")
    if backbone not in list_models(task="classify"):
        raise ConfigError(
            f"the backbone {backbone!r} is not a zoo classifier, so it has no classification weights; start from the "
            "whole detector's weights instead (pretrained=PATH, or a darknet partial file such as yolov4-tiny.conv.29)"
        )
    load_backbone(model, spec, model_info(backbone))


def create_model(
    name: str,
    num_classes: int | None = None,
    in_chans: int = 3,
    pretrained: str | bool | None = None,
    pretrained_backbone: str | bool | None = None,
    features_only: bool = False,
    out_indices: tuple[int, ...] | None = None,
    **overrides,
) -> CspNet | FeatureNet | nn.Module:
    """Build a registered model, as `timm.create_model` does.

    pretrained: None/False; True, the model's published weights (timm's ImageNet weights, converted, for the
    classifiers timm has; needs network once); "timm"; or a local file of any format `load_into` reads (.safetensors,
    a torch checkpoint loaded with weights_only=True, darknet .weights), for classifiers and detectors alike.
    overrides: architecture fields, e.g. partial_ratio=0.25, fusion="last", act="mish", small_input=True;
    for detectors YoloCfg's, e.g. backbone="cspresnext50", width=0.5.
    pretrained_backbone: a detector's backbone only: True/"timm" (timm's ImageNet weights of the backbone) or a
    file of the backbone classifier's weights (e.g. a cspdarknet53 trained here); the neck and head stay fresh.
    num_classes: None = the model's default (1000 for classifiers, 80 for detectors).
    """
    info = model_info(name)
    if features_only and info.model_cls is not None:
        raise ConfigError(f"{name} is a {info.task} model; features_only applies to classification backbones")
    cfg = build_cfg(name, **overrides)
    num_classes = info.num_classes if num_classes is None else num_classes
    model = (info.model_cls or CspNet)(cfg, num_classes=num_classes, in_chans=in_chans)
    model.name = name
    if pretrained_backbone:
        load_detector_backbone(model, pretrained_backbone)
    if pretrained:
        load_pretrained(model, pretrained, info)
    return FeatureNet(model, out_indices) if features_only else model
