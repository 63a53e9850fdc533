"""The one weights loader: a state dict or a weights file, into any cspnet model (classifier or detector).

The file's format is read from its content, not its name: safetensors and torch files are read here (torch files
with weights_only=True); formats that belong to a layer above (darknet `.weights`, in cspnet.interop) and named
sources (pretrained="timm") plug in through `register_weights_format` / `register_pretrained_source`, so this
module never imports them (models sits below interop).
"""

from __future__ import annotations

import struct
import warnings
import zipfile
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from cspnet.errors import ConfigError, InputError
from cspnet.io import atomic_write, torch_load

if TYPE_CHECKING:
    from cspnet.models.info import ModelInfo

CHECKSUM_KEY = "cspnet_crc32"  # safetensors metadata: CRC-32 of the tensor bytes, as cspnet wrote them

# format name (as sniff_format says it) -> loader(model, path); filled by the layers that read them
WEIGHT_FORMATS: dict[str, Callable[[nn.Module, Path], None]] = {}
# pretrained="<name>" -> fn(model info) -> state dict under cspnet names; filled by interop (e.g. "timm")
PRETRAINED_SOURCES: dict[str, Callable[[ModelInfo], dict[str, torch.Tensor]]] = {}
# hooks interop fills: the file of a model's published weights (pretrained=True), and a name or URL -> local file
HOOKS: dict[str, Callable] = {}


def register_weights_format(name: str, loader: Callable[[nn.Module, Path], None]) -> None:
    """Let `load_into` read files that `sniff_format` calls `name` (e.g. "darknet") with `loader(model, path)`."""
    WEIGHT_FORMATS[name] = loader


def register_pretrained_source(name: str, fetch: Callable[[ModelInfo], dict[str, torch.Tensor]]) -> None:
    """Let `create_model(..., pretrained=name)` load `fetch(model_info)`, a state dict under cspnet's names."""
    PRETRAINED_SOURCES[name] = fetch


def register_published_file(find: Callable[[ModelInfo], Path]) -> None:
    """Let pretrained=True load `find(model_info)`, a local (downloaded) file of the authors' weights."""
    HOOKS["published"] = find


def register_resolver(resolve: Callable[[str], Path]) -> None:
    """Let weights be given as a published name or URL (`resolve` returns the cached local file)."""
    HOOKS["resolve"] = resolve


def _local(spec: str | Path) -> Path:
    """A weights argument as a local file: as it is, or a published name / URL through the resolver."""
    path = Path(spec)
    if path.exists() or "resolve" not in HOOKS:
        return path
    return HOOKS["resolve"](str(spec))


def _crc32(tensors: dict[str, torch.Tensor]) -> str:
    crc = 0
    for k in sorted(tensors):
        t = tensors[k].contiguous()
        crc = zlib.crc32(k.encode(), crc)
        crc = zlib.crc32(t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b"", crc)
    return f"{crc:08x}"


def _existing_file(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        raise InputError(f"weights {str(path)!r} is a folder; pass a .safetensors, .pt or darknet .weights file")
    if not path.is_file():
        raise InputError(f"weights file {str(path)!r} not found; pass an existing .safetensors, .pt or .weights file")
    return path


def _darknet_header_fits(head: bytes, size: int) -> bool:
    """Darknet's header: int32 major, minor, revision, then `seen` (uint64 from 0.2 on, else uint32), then float32s.
    It has no magic number: small non-negative versions and a whole number of float32 after it are the test."""
    if len(head) < 16:
        return False
    major, minor, revision = struct.unpack_from("<3i", head)
    if not all(0 <= v < 1 << 16 for v in (major, minor, revision)):
        return False
    header = 20 if major * 10 + minor >= 2 and major < 1000 and minor < 1000 else 16
    return size >= header and (size - header) % 4 == 0


def sniff_format(path: str | Path) -> str:
    """The format of a weights file from its first bytes: "safetensors", "torch" or "darknet" (names lie)."""
    path = _existing_file(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(24)
    if not head:
        raise InputError(f"weights file {str(path)!r} is empty; it was not written completely")
    if head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 1 << 30:  # u64 JSON header length, then JSON
        return "safetensors"
    if head[:4] == b"PK\x03\x04" or zipfile.is_zipfile(path) or (head[0] == 0x80 and 2 <= head[1] <= 5):
        return "torch"  # torch.save's zip, or a legacy (pre-1.6) pickle
    if _darknet_header_fits(head, size):
        return "darknet"
    raise InputError(
        f"cannot read {str(path)!r}: not a weights file (not safetensors, a torch file or darknet .weights; it starts "
        f"with bytes {head[:8].hex(' ')}); pass a .safetensors, .pt or .weights file"
    )


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """A .safetensors file as a state dict; one line when it is damaged.

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
        raise InputError(
            f"cannot read {str(path)!r} as .safetensors: {type(e).__name__}: {' '.join(str(e).split())[:200]}"
        ) from None
    want = meta.get(CHECKSUM_KEY)
    if want is not None and _crc32(tensors) != want:
        raise InputError(f"{str(path)!r} is damaged (its tensors do not match the checksum it was saved with)")
    return tensors


def _unwrap(obj: object, source: str) -> tuple[dict[str, torch.Tensor], dict | None]:
    """(state dict, meta) from a bare state dict or a training checkpoint (under 'model_ema'/'model'/'state_dict')."""
    meta = obj.get("meta") if isinstance(obj, Mapping) and isinstance(obj.get("meta"), dict) else None
    for key in ("model_ema", "model", "state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(f"{source} holds no state dict of tensors")
    return dict(obj), meta


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    """(state dict, meta) from a safetensors or torch file, whatever its name. meta is a training checkpoint's
    architecture record (model, num_classes, overrides), else None."""
    fmt = sniff_format(path)
    if fmt == "safetensors":
        return read_safetensors(path), None
    if fmt == "torch":
        return _unwrap(torch_load(path, "torch checkpoint"), repr(str(path)))
    raise InputError(
        f"{str(path)!r} is a {fmt} weights file: it has no tensor names, its layout comes from the model; "
        "load it into one (create_model(NAME, pretrained=PATH), or --model NAME --weights PATH)"
    )


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


def _other_class_count(model: nn.Module, own: dict, state: dict) -> set[str]:
    """Keys of output layers (Linear or Conv2d, whatever they are called: head.fc, fc, classifier, head.preds.N)
    that differ only in their number of outputs: another class count. A layer inside the network cannot differ so
    alone (the next layer's inputs or its norm would differ too), so this needs no list of head names."""
    modules = dict(model.named_modules())
    out = set()
    for k, v in state.items():
        if k not in own or v.shape == own[k].shape:
            continue
        owner, _, param = k.rpartition(".")
        if (
            isinstance(modules.get(owner), (nn.Linear, nn.Conv2d))
            and param in ("weight", "bias")
            and v.dim() == own[k].dim()
            and v.shape[1:] == own[k].shape[1:]
        ):
            out.add(k)
    return out


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    own = model.state_dict()
    if not own.keys() & state.keys():
        raise InputError(
            f"{source} holds none of the model's tensors (it has {next(iter(state))!r}, the model "
            f"{next(iter(own), None)!r}): weights of another model, or timm/darknet names not converted"
        )
    fresh = _other_class_count(model, own, state)
    mismatched = [k for k in state if k in own and k not in fresh and state[k].shape != own[k].shape]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if mismatched or missing or unexpected:
        detail = (mismatched or missing or unexpected)[:3]
        raise InputError(
            f"{source} is for another architecture ({len(mismatched)} mismatched, {len(missing)} missing, "
            f"{len(unexpected)} unexpected, e.g. {detail}); check the model name and overrides"
        )
    if fresh:
        layers = sorted({k.rpartition(".")[0] for k in fresh})
        first = min(fresh)
        warnings.warn(
            f"{source} has another class count ({layers[0]} has {state[first].shape[0]} outputs there, "
            f"{own[first].shape[0]} here): keeping a fresh {', '.join(layers)} (reset_classifier)",
            stacklevel=3,
        )
    model.load_state_dict({k: v for k, v in state.items() if k not in fresh}, strict=False)


def load_into(model: nn.Module, source: str | Path | Mapping[str, torch.Tensor], name: str | None = None) -> None:
    """Load weights into `model`: a state dict or training checkpoint dict, or a file of any format cspnet reads
    (safetensors, torch, and the formats interop registers: darknet .weights). All or nothing: keys and shapes must
    match, except output layers of another class count, which stay fresh (one warning says which)."""
    if isinstance(source, Mapping):
        name = name or "the state dict"
        state, _ = _unwrap(source, name)
        return _load_state(model, state, name)
    if not isinstance(source, (str, Path)):
        raise ConfigError(f"weights must be a file path or a state dict, not {type(source).__name__}")
    path = _local(source)
    fmt = sniff_format(path)
    if fmt in ("safetensors", "torch"):
        return _load_state(model, read_state_dict(path), name or str(path))
    if fmt not in WEIGHT_FORMATS:
        raise InputError(f"{fmt} weights ({path}) are read by cspnet.interop, which is not loaded: import cspnet")
    WEIGHT_FORMATS[fmt](model, path)


def load_pretrained(model: nn.Module, pretrained: str | Path | bool, info: ModelInfo) -> None:
    """create_model's `pretrained`: True (the model's published weights: timm's where timm has the model), the name
    of a registered source ("timm"), or a file path (any format `load_into` reads)."""
    if pretrained is True:
        if not info.timm_name:
            if "published" in HOOKS:
                return load_into(model, HOOKS["published"](info))
            raise ConfigError(
                f"pretrained=True: no pretrained weights registered for {info.name} yet; pass pretrained=PATH "
                "(a .safetensors or .pt file)"
            )
        pretrained = "timm"
    if isinstance(pretrained, str) and pretrained in PRETRAINED_SOURCES:
        return _load_state(model, PRETRAINED_SOURCES[pretrained](info), f"{pretrained} weights of {info.name}")
    if not isinstance(pretrained, (str, Path)):
        raise ConfigError(f"pretrained must be True, 'timm' or a file path, not {pretrained!r}")
    load_into(model, pretrained)


def load_backbone(model: nn.Module, spec: str | Path | bool | Mapping, info: ModelInfo) -> None:
    """A detector's `pretrained_backbone`: classification weights of its zoo backbone `info` (True or "timm": timm's
    ImageNet weights; or a file/state dict of the classifier) into `model.backbone`, the classifier's head dropped.
    The same loader and checks as any weights: another width or architecture is one line."""
    if spec is True or spec == "timm":
        if not info.timm_name or "timm" not in PRETRAINED_SOURCES:
            raise ConfigError(f"timm has no ImageNet weights for the backbone {info.name}; pass a file of its weights")
        state, name = PRETRAINED_SOURCES["timm"](info), f"timm weights of {info.name}"
    elif isinstance(spec, Mapping):
        state, name = _unwrap(spec, "the backbone state dict")[0], "the backbone state dict"
    else:
        path = _local(spec)
        state, name = read_state_dict(path), str(path)
    own = model.backbone.state_dict()
    kept = {k: v for k, v in state.items() if k in own}  # the classifier's head and unused last stages drop out
    if not kept:
        raise InputError(f"{name} holds none of the {info.name} backbone's tensors; pass weights of a {info.name}")
    _load_state(model.backbone, kept, name)
