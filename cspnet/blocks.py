"""Blocks: the repeated units a stage stacks. Each exposes `out_chs`.

Every block takes (in_chs, out_chs, stride, bottle_ratio, groups, act, leaky_slope) so that
`CrossStage` can wrap any of them without knowing which one it holds.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from cspnet.errors import ConfigError
from cspnet.layers import ConvBNAct, make_act


class Bottleneck(nn.Module):
    """ResNet/ResNeXt bottleneck: 1x1 reduce, 3x3 (grouped), 1x1 expand, residual add, activation."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int = 1,
        bottle_ratio: float = 0.25,
        groups: int = 1,
        act: str = "relu",
        leaky_slope: float = 0.01,
    ) -> None:
        super().__init__()
        mid = int(round(out_chs * bottle_ratio))
        self.out_chs = out_chs
        self.conv1 = ConvBNAct(in_chs, mid, 1, act=act, leaky_slope=leaky_slope)
        self.conv2 = ConvBNAct(mid, mid, 3, stride, groups=groups, act=act, leaky_slope=leaky_slope)
        self.conv3 = ConvBNAct(mid, out_chs, 1, act=None)
        # projection shortcut only where the shape changes (first block of a ResNet stage)
        self.downsample = ConvBNAct(in_chs, out_chs, 1, stride, act=None) if stride != 1 or in_chs != out_chs else None
        self.act3 = make_act(act, leaky_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.conv3(self.conv2(self.conv1(x)))
        x += shortcut
        return self.act3(x)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv3.bn.weight)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs, residual add, activation (ResNet-10/18)."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int = 1,
        bottle_ratio: float = 1.0,
        groups: int = 1,
        act: str = "relu",
        leaky_slope: float = 0.01,
    ) -> None:
        super().__init__()
        mid = int(round(out_chs * bottle_ratio))
        self.out_chs = out_chs
        self.conv1 = ConvBNAct(in_chs, mid, 3, stride, groups=groups, act=act, leaky_slope=leaky_slope)
        self.conv2 = ConvBNAct(mid, out_chs, 3, act=None)
        self.downsample = ConvBNAct(in_chs, out_chs, 1, stride, act=None) if stride != 1 or in_chs != out_chs else None
        self.act2 = make_act(act, leaky_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.conv2(self.conv1(x))
        x += shortcut
        return self.act2(x)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv2.bn.weight)


class DarkBlock(nn.Module):
    """Darknet residual block: 1x1 reduce, 3x3 restore, linear residual add."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int = 1,
        bottle_ratio: float = 0.5,
        groups: int = 1,
        act: str = "leaky",
        leaky_slope: float = 0.01,
    ) -> None:
        super().__init__()
        if stride != 1 or in_chs != out_chs:
            raise ConfigError("a dark block keeps its shape; downsample with the stage's conv_down")
        mid = int(round(out_chs * bottle_ratio))
        self.out_chs = out_chs
        self.conv1 = ConvBNAct(in_chs, mid, 1, act=act, leaky_slope=leaky_slope)
        self.conv2 = ConvBNAct(mid, out_chs, 3, groups=groups, act=act, leaky_slope=leaky_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.conv1(x))
        y += x
        return y

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv2.bn.weight)


BlockFn = Callable[..., nn.Module]
BLOCKS: dict[str, BlockFn] = {"bottleneck": Bottleneck, "basic": BasicBlock, "dark": DarkBlock}


def get_block(name: str) -> BlockFn:
    """Look up a block type by name."""
    try:
        return BLOCKS[name]
    except KeyError:
        raise ConfigError(f"unknown block type {name!r}; choose one of {', '.join(BLOCKS)}") from None
