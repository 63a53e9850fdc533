"""Loading and saving weights: safetensors preferred, torch files only with weights_only=True."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from cspnet.errors import ConfigError, InputError


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from .safetensors or a torch checkpoint (a bare state dict, or under 'model'/'state_dict')."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"weights file {str(path)!r} not found; pass an existing .safetensors or .pt file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors differ by torch version; one line for the user
        raise InputError(f"cannot read {str(path)!r} as a torch checkpoint ({type(e).__name__}: {e})") from None
    for key in ("model_ema", "model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(f"{str(path)!r} holds no state dict of tensors")
    return obj


def save_state_dict(state_dict: dict[str, torch.Tensor], path: str | Path) -> Path:
    """Write weights as .safetensors (or a torch file for other suffixes), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(tensors, str(tmp))
    else:
        torch.save(tensors, tmp)
    tmp.replace(path)
    return path


def load_into(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load weights; a classifier of another size is skipped with a warning, anything else must match."""
    own = model.state_dict()
    head = {k for k in state_dict if k.startswith("head.fc.") and k in own and state_dict[k].shape != own[k].shape}
    if head:
        warnings.warn(
            f"{source} has a {state_dict['head.fc.weight'].shape[0]}-class classifier, the model "
            f"{own['head.fc.weight'].shape[0]}: keeping a fresh classifier (reset_classifier)",
            stacklevel=3,
        )
        state_dict = {k: v for k, v in state_dict.items() if k not in head}
    mismatched = [k for k in state_dict if k in own and state_dict[k].shape != own[k].shape]
    missing = [k for k in own if k not in state_dict and k not in head]
    unexpected = [k for k in state_dict if k not in own]
    if mismatched or missing or unexpected:
        detail = (mismatched or missing or unexpected)[:3]
        raise InputError(
            f"{source} is for another architecture ({len(mismatched)} mismatched, {len(missing)} missing, "
            f"{len(unexpected)} unexpected, e.g. {detail}); check the model name and overrides"
        )
    model.load_state_dict(state_dict, strict=False)


def load_pretrained(model: nn.Module, name: str, pretrained: str) -> None:
    """pretrained='timm' converts timm's ImageNet weights; anything else is a local file path."""
    if pretrained == "timm":
        from cspnet.models.registry import model_info
        from cspnet.timm_interop import convert_timm_state_dict

        info = model_info(name)
        if not info.timm_name:
            raise ConfigError(f"timm has no weights for {name}; pass pretrained=PATH to a local file")
        try:
            import timm

            ref = timm.create_model(info.timm_name, pretrained=True)
        except ImportError:
            raise ConfigError("pretrained='timm' needs timm: pip install 'cspnet[timm]'") from None
        except Exception as e:
            raise InputError(
                f"could not fetch timm weights for {info.timm_name} ({type(e).__name__}); offline? download them "
                "once with network and pass pretrained=PATH to the saved file"
            ) from None
        load_into(model, convert_timm_state_dict(ref.state_dict()), f"timm {info.timm_name}")
        return
    load_into(model, read_state_dict(pretrained), str(pretrained))
