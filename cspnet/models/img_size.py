"""The one image-size rule of train, val, predict and export: a side is a positive multiple of the model's stride.

A detector's grid needs whole cells (stride 32 for the YOLO zoo); a classifier pools globally and takes any size
(stride 1). Every command calls `check_img_size`, so a bad size gets the same line wherever it is given.
"""

from __future__ import annotations

import operator

import torch
from torch import nn

from cspnet.errors import ConfigError


def model_stride(model: nn.Module) -> int:
    """The multiple an input side must be: a detector's largest stride, 1 for a model without one."""
    return int(getattr(model, "stride", 1) or 1)


def stride_of(name: str, **overrides) -> int:
    """The stride of a registered model, built on the meta device (no weights allocated: milliseconds)."""
    from cspnet.models.registry import create_model, model_info

    kw = {"num_classes": 1} if model_info(name).task == "detect" else {}
    with torch.device("meta"):
        return model_stride(create_model(name, **kw, **overrides))


def check_img_size(size: int, stride: int) -> int:
    """`size` when it is a positive multiple of `stride`; else ConfigError naming the two nearest valid sizes."""
    try:
        size = operator.index(size)
    except TypeError:
        raise ConfigError(f"--img {size!r}: an image size is a whole number of pixels") from None
    if size < 1:
        raise ConfigError(f"--img {size}: an image size must be a positive number of pixels")
    if size % stride:
        lo = size // stride * stride
        use = f"{lo} or {lo + stride}" if lo else str(stride)
        raise ConfigError(f"--img {size} is not a multiple of the model's stride {stride}; use {use}")
    return size
