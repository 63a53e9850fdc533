"""Mixed precision: the --amp modes, and the autocast dtype each one gives on a device."""

from __future__ import annotations

import torch

from cspnet.errors import ConfigError

AMP_MODES = ("auto", "off", "bf16", "fp16")  # auto: fp16 on CUDA, off on the CPU


def check_amp(amp: str) -> None:
    if amp not in AMP_MODES:
        raise ConfigError(f"unknown amp mode {amp!r}; use {', '.join(AMP_MODES[:-1])} or {AMP_MODES[-1]}")


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for --amp on this device (None: full precision)."""
    check_amp(amp)
    if amp == "auto":
        amp = "fp16" if device.type == "cuda" else "off"
    if amp == "fp16" and device.type == "cpu":
        raise ConfigError("fp16 autocast needs CUDA; on the CPU use --amp bf16 or --amp off")
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
