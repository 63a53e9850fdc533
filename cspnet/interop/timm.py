"""timm interop: convert a timm model (and its weights) into the equivalent cspnet model."""

from __future__ import annotations

from torch import nn

from cspnet.errors import ConfigError
from cspnet.models.net import CspNet
from cspnet.models.registry import _REGISTRY, create_model
from cspnet.models.weights import convert_timm_state_dict


def timm_architecture(timm_model: nn.Module) -> str:
    """The timm model's registered name (e.g. 'cspresnet50')."""
    cfg = getattr(timm_model, "pretrained_cfg", None) or getattr(timm_model, "default_cfg", None) or {}
    arch = cfg.get("architecture")
    if not arch:
        raise ConfigError("cannot tell which timm model this is; create it with timm.create_model(name)")
    return arch


def cspnet_name_for_timm(arch: str) -> str:
    for name, info in _REGISTRY.items():
        if info.timm_name == arch:
            return name
    known = sorted(i.timm_name for i in _REGISTRY.values() if i.timm_name)
    raise ConfigError(f"timm model {arch!r} has no cspnet equivalent; supported: {', '.join(known)}")


def from_timm(timm_model: nn.Module) -> CspNet:
    """The equivalent cspnet model with timm's weights; eval outputs match timm's."""
    arch = timm_architecture(timm_model)
    name = cspnet_name_for_timm(arch)
    model = create_model(name, num_classes=timm_model.num_classes, in_chans=getattr(timm_model, "in_chans", 3))
    missing, unexpected = model.load_state_dict(convert_timm_state_dict(timm_model.state_dict()), strict=False)
    if missing or unexpected:
        raise ConfigError(
            f"timm {arch} does not map onto cspnet {name}: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    return model.train(timm_model.training)
