"""The model registry: a decorator names each variant, `create_model` builds it."""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass

from cspnet.errors import ConfigError
from cspnet.models.net import CspNet, FeatureNet, ModelCfg
from cspnet.nn.stages import StageCfg


@dataclass(frozen=True)
class ModelInfo:
    """Metadata next to the architecture: its twin, the figures it should reproduce, where it comes from."""

    name: str
    build_cfg: Callable[[], ModelCfg]
    twin: str | None = None
    img_size: int = 224
    params_m: float | None = None  # millions, 1000 classes, as measured by `cspnet models`
    gmacs: float | None = None  # at img_size, batch 1
    timm_name: str | None = None  # same architecture in timm (parity tests, from_timm, pretrained="timm")
    paper: str = ""  # the paper row / reference it reproduces

    @property
    def is_csp(self) -> bool:
        return any(s.is_csp for s in self.build_cfg().stages)


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(**meta) -> Callable[[Callable[[], ModelCfg]], Callable[[], ModelCfg]]:
    """Register a function returning a ModelCfg under its own name, with metadata."""

    def wrap(fn: Callable[[], ModelCfg]) -> Callable[[], ModelCfg]:
        _REGISTRY[fn.__name__] = ModelInfo(name=fn.__name__, build_cfg=fn, **meta)
        return fn

    return wrap


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style pattern, sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


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


def create_model(
    name: str,
    num_classes: int = 1000,
    in_chans: int = 3,
    pretrained: str | bool | None = None,
    features_only: bool = False,
    out_indices: tuple[int, ...] | None = None,
    **overrides,
) -> CspNet | FeatureNet:
    """Build a registered model, as `timm.create_model` does.

    pretrained: None/False, True or "timm" (timm's ImageNet weights, converted; needs network once) or a local file
    (.safetensors, or a torch checkpoint loaded with weights_only=True).
    overrides: architecture fields, e.g. partial_ratio=0.25, fusion="last", act="mish", small_input=True.
    """
    cfg = build_cfg(name, **overrides)
    model = CspNet(cfg, num_classes=num_classes, in_chans=in_chans)
    model.name = name
    if pretrained:
        from cspnet.models.weights import load_pretrained

        load_pretrained(model, pretrained, model_info(name).timm_name)
    if features_only:
        return FeatureNet(model, out_indices)
    return model
