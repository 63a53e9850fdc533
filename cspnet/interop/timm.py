"""timm interop: convert a timm model (and its weights) into the equivalent cspnet model."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from cspnet.errors import ConfigError, InputError
from cspnet.models.net import CspNet
from cspnet.models.registry import create_model, iter_models


def timm_architecture(timm_model: nn.Module) -> str:
    """The timm model's registered name (e.g. 'cspresnet50')."""
    cfg = getattr(timm_model, "pretrained_cfg", None) or getattr(timm_model, "default_cfg", None) or {}
    arch = cfg.get("architecture")
    if not arch:
        raise ConfigError("cannot tell which timm model this is; create it with timm.create_model(name)")
    return arch


def cspnet_name_for_timm(arch: str) -> str:
    """The registered cspnet model with the same architecture as timm's `arch`."""
    for info in iter_models():
        if info.timm_name == arch:
            return info.name
    known = sorted(i.timm_name for i in iter_models() if i.timm_name)
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


# ---- timm's weights under cspnet's names (create_model(..., pretrained="timm") and from_timm) --------------------

# timm resnet.py names -> ours; timm cspnet.py already uses our names
_RESNET_RULES = [
    (r"^conv1\.weight$", "stem.conv1.conv.weight"),
    (r"^bn1\.(.+)$", r"stem.conv1.bn.\1"),
    (
        r"^layer(\d)\.(\d+)\.conv(\d)\.weight$",
        lambda m: f"stages.{int(m[1]) - 1}.blocks.{m[2]}.conv{m[3]}.conv.weight",
    ),
    (
        r"^layer(\d)\.(\d+)\.bn(\d)\.(.+)$",
        lambda m: f"stages.{int(m[1]) - 1}.blocks.{m[2]}.conv{m[3]}.bn.{m[4]}",
    ),
    (
        r"^layer(\d)\.(\d+)\.downsample\.0\.(.+)$",
        lambda m: f"stages.{int(m[1]) - 1}.blocks.{m[2]}.downsample.conv.{m[3]}",
    ),
    (
        r"^layer(\d)\.(\d+)\.downsample\.1\.(.+)$",
        lambda m: f"stages.{int(m[1]) - 1}.blocks.{m[2]}.downsample.bn.{m[3]}",
    ),
    (r"^fc\.(.+)$", r"head.fc.\1"),
]


def convert_timm_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename timm keys to cspnet keys (identity for timm's cspnet.py models)."""
    out = {}
    for key, value in state_dict.items():
        new = key
        for pattern, repl in _RESNET_RULES:
            if re.match(pattern, key):
                new = re.sub(pattern, repl, key)
                break
        out[new] = value
    return out


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """Whether the weights hub answers at all (one TCP connect), so an offline machine fails in seconds."""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


@contextmanager
def _hub_offline_unless_reachable() -> Iterator[None]:
    """Without a network, use the Hugging Face cache only: no minute of retries, an immediate 'not in cache'."""
    try:
        from huggingface_hub import constants
    except ImportError:
        yield
        return
    saved = constants.HF_HUB_OFFLINE
    if not saved and not hub_reachable():
        constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


def timm_pretrained(info) -> dict[str, torch.Tensor]:
    """timm's ImageNet weights for a registered model (`ModelInfo`), under cspnet's names; needs network once."""
    if not info.timm_name:
        raise ConfigError(f"timm has no weights for {info.name}; pass pretrained=PATH to a local file")
    try:
        import timm

        with _hub_offline_unless_reachable():
            ref = timm.create_model(info.timm_name, pretrained=True)
    except ImportError:
        raise ConfigError("pretrained='timm' needs timm: pip install 'cspnet[timm]'") from None
    except Exception as e:
        raise InputError(
            f"could not fetch timm weights for {info.timm_name} ({type(e).__name__}); offline? download them "
            "once with network and pass pretrained=PATH to the saved file"
        ) from None
    return convert_timm_state_dict(ref.state_dict())
