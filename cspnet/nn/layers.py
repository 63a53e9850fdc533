"""Layers: activations and the Conv-BN-activation unit every block is made of."""

from __future__ import annotations

import torch
from torch import nn

from cspnet.errors import ConfigError

ACTIVATIONS = ("relu", "leaky", "mish", "silu", "sigmoid", "tanh", "linear")
_ALIASES = {"leaky_relu": "leaky", "swish": "silu", "logistic": "sigmoid", "identity": "linear", "none": "linear"}


def check_act(name: str) -> str:
    """Return the canonical activation name, or raise a one-line error."""
    key = _ALIASES.get(name, name)
    if key not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    return key


def make_act(name: str | None, leaky_slope: float = 0.01, inplace: bool = True) -> nn.Module:
    """The one activation factory; `leaky` uses `leaky_slope` (darknet 0.1, timm 0.01), darknet names accepted."""
    key = check_act(name or "linear")
    if key == "relu":
        return nn.ReLU(inplace=inplace)
    if key == "leaky":
        return nn.LeakyReLU(leaky_slope, inplace=inplace)
    if key == "mish":
        return nn.Mish(inplace=inplace)
    if key == "silu":
        return nn.SiLU(inplace=inplace)
    if key == "sigmoid":
        return nn.Sigmoid()
    if key == "tanh":
        return nn.Tanh()
    return nn.Identity()


def same_padding(kernel_size: int, stride: int = 1) -> int:
    """timm/darknet symmetric padding for odd kernels."""
    return ((stride - 1) + (kernel_size - 1)) // 2


class ConvBNAct(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> activation; cspnet.nn.fuse swaps it for a folded conv at deploy time."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        act: str | None = "relu",
        leaky_slope: float = 0.01,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_chs, out_chs, kernel_size, stride, same_padding(kernel_size, stride), groups=groups, bias=False
        )
        self.bn = nn.BatchNorm2d(out_chs)
        self.act = make_act(act, leaky_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class BNActConv(nn.Module):
    """Pre-activation unit BatchNorm2d -> activation -> Conv2d (DenseNet); nothing to fuse, the act sits between."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        act: str | None = "relu",
        leaky_slope: float = 0.01,
    ) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_chs)
        self.act = make_act(act, leaky_slope)
        self.conv = nn.Conv2d(
            in_chs, out_chs, kernel_size, stride, same_padding(kernel_size, stride), groups=groups, bias=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.act(self.bn(x)))
