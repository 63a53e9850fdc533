"""File I/O with guarantees: atomic writes (a kill leaves the old file whole) and weights_only torch loads."""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from cspnet.errors import InputError


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any], mode: str = "wb") -> Path:
    """Call `write(f)` on a temp file beside `path`, fsync, then rename it over `path`."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder; pass a file path")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, mode, **({"newline": ""} if "b" not in mode else {})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json(path: str | Path, obj: Any, indent: int = 1) -> Path:
    """`obj` as a JSON file ending in a newline, written atomically (safe when two processes write it at once)."""
    return atomic_write(path, lambda f: f.write(json.dumps(obj, indent=indent) + "\n"), mode="w")


def torch_load(path: str | Path, what: str = "torch file") -> Any:
    """torch.load with weights_only=True (tensors and primitives only: no code runs), one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} {str(path)!r} not found; pass an existing file")
    check_zip_crc(path, what)
    try:  # a file object: torch.load would read any path named .safetensors as safetensors, whatever it holds
        with open(path, "rb") as f:
            return torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors differ by torch version; one line for the user
        raise InputError(f"cannot read {str(path)!r} as a {what} ({type(e).__name__}: {e})") from None


def check_zip_crc(path: str | Path, what: str = "torch file") -> None:
    """torch.save writes a zip with a CRC-32 per record but torch.load never checks them: a flipped byte in a
    tensor would load silently. Check every record first (about as fast as the load itself)."""
    if not zipfile.is_zipfile(path):
        return  # a legacy (pre-1.6) torch file, or damaged beyond its zip directory: torch.load reports it
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except Exception as e:  # BadZipFile, NotImplementedError (a flipped compression field), OSError, ...
        raise InputError(
            f"{what} {str(path)!r} is damaged ({type(e).__name__}: {e}); restore it or use another copy"
        ) from None
    if bad is not None:
        raise InputError(
            f"{what} {str(path)!r} is damaged (checksum mismatch in {bad}); restore it or use another copy"
        )
