"""Loading and saving weights: safetensors preferred, torch files only with weights_only=True."""

from __future__ import annotations

import re
import socket
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from cspnet.errors import ConfigError, InputError
from cspnet.io import atomic_write, torch_load

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


CHECKSUM_KEY = "cspnet_crc32"  # safetensors metadata: CRC-32 of the tensor bytes, as cspnet wrote them


def _crc32(tensors: dict[str, torch.Tensor]) -> str:
    crc = 0
    for k in sorted(tensors):
        t = tensors[k].contiguous()
        crc = zlib.crc32(k.encode(), crc)
        crc = zlib.crc32(t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b"", crc)
    return f"{crc:08x}"


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """A .safetensors file as a state dict; one line when it is not one (e.g. a renamed pickle) or is damaged.

    Files cspnet wrote carry a CRC-32 of their tensors (CHECKSUM_KEY), checked here; others only get the format's
    own checks (header and sizes), which cannot see a flipped byte inside a tensor.
    """
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # SafetensorError, OSError, ... differ by version; one line for the user
        hint = " (it is a zip: a torch file named .safetensors? rename it to .pt)" if zipfile.is_zipfile(path) else ""
        raise InputError(
            f"cannot read {str(path)!r} as .safetensors{hint}: {type(e).__name__}: {' '.join(str(e).split())[:200]}"
        ) from None
    want = meta.get(CHECKSUM_KEY)
    if want is not None and _crc32(tensors) != want:
        raise InputError(f"{str(path)!r} is damaged (its tensors do not match the checksum it was saved with)")
    return tensors


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    """(state dict, meta) from .safetensors or a torch file (a bare state dict, or under 'model_ema'/'model'/
    'state_dict'). meta is a training checkpoint's architecture record (model, num_classes, overrides), else None."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"weights {str(path)!r} is a folder; pass a .safetensors or .pt file")
    if not path.is_file():
        raise InputError(f"weights file {str(path)!r} not found; pass an existing .safetensors or .pt file")
    if path.suffix == ".safetensors":
        return read_safetensors(path), None
    obj = torch_load(path, "torch checkpoint")
    meta = obj.get("meta") if isinstance(obj, dict) and isinstance(obj.get("meta"), dict) else None
    for key in ("model_ema", "model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(f"{str(path)!r} holds no state dict of tensors")
    return obj, meta


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from .safetensors or a torch checkpoint (a bare state dict, or under 'model'/'state_dict')."""
    return read_checkpoint(path)[0]


def save_state_dict(state_dict: dict[str, torch.Tensor], path: str | Path) -> Path:
    """Write weights as .safetensors (with a CRC-32 of the tensors) or a torch file for other suffixes, atomically."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    if Path(path).suffix == ".safetensors":
        from safetensors.torch import save

        return atomic_write(path, lambda f: f.write(save(tensors, metadata={CHECKSUM_KEY: _crc32(tensors)})))
    return atomic_write(path, lambda f: torch.save(tensors, f))


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


def load_pretrained(model: nn.Module, pretrained: str | bool, timm_name: str | None = None) -> None:
    """pretrained='timm' (or True: the default source, as in timm) converts timm's ImageNet weights for
    `timm_name`; a string is a local file path."""
    if pretrained is True:
        if not timm_name:
            raise ConfigError(
                f"pretrained=True: there are no published weights for {getattr(model, 'name', 'this model')}; "
                "pass pretrained=PATH to a local .safetensors or .pt file"
            )
        pretrained = "timm"
    if not isinstance(pretrained, (str, Path)):
        raise ConfigError(f"pretrained must be True, 'timm' or a file path, not {pretrained!r}")
    if pretrained == "timm":
        if not timm_name:
            raise ConfigError(
                f"timm has no weights for {getattr(model, 'name', 'this model')}; pass pretrained=PATH to a local file"
            )
        try:
            import timm

            with _hub_offline_unless_reachable():
                ref = timm.create_model(timm_name, pretrained=True)
        except ImportError:
            raise ConfigError("pretrained='timm' needs timm: pip install 'cspnet[timm]'") from None
        except Exception as e:
            raise InputError(
                f"could not fetch timm weights for {timm_name} ({type(e).__name__}); offline? download them "
                "once with network and pass pretrained=PATH to the saved file"
            ) from None
        load_into(model, convert_timm_state_dict(ref.state_dict()), f"timm {timm_name}")
        return
    load_into(model, read_state_dict(pretrained), str(pretrained))
