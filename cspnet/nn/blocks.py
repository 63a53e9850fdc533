"""Blocks: the repeated units a stage stacks. Each exposes `out_chs`.

Every block takes (in_chs, out_chs, stride, bottle_ratio, groups, act, leaky_slope) so that
`CrossStage` can wrap any of them without knowing which one it holds; `register_block` adds a user's own.

`bottle_ratio` means one thing everywhere: the width of the block's inner (bottleneck) convs relative to the
channels that conv path emits. Residual blocks emit `out_chs` (ResNet 0.25, timm's CSPResNet 0.5, darknet 0.5);
a dense layer emits its growth (DenseNet's bn_size 4); each branch of a two-way dense layer emits half the growth
(Pelee's bottleneck width, rounded down to a multiple of 4).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from cspnet.errors import ConfigError
from cspnet.nn.layers import BNActConv, ConvBNAct, make_act


class PadChannels(nn.Module):
    """Zero-pad channels: old darknet's [shortcut] from a narrower map adds onto the first channels only."""

    def __init__(self, extra: int) -> None:
        super().__init__()
        self.extra = extra

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))


def _shortcut(in_chs: int, out_chs: int, stride: int, kind: str) -> nn.Module | None:
    """Residual shortcut: identity, a 1x1 projection (ResNet), or zero-padded channels (kind="pad", darknet)."""
    if stride == 1 and in_chs == out_chs:
        return None
    if kind == "pad" and stride == 1 and in_chs < out_chs:
        return PadChannels(out_chs - in_chs)
    if kind not in ("proj", "pad"):
        raise ConfigError(f"unknown shortcut {kind!r}; choose proj or pad")
    return ConvBNAct(in_chs, out_chs, 1, stride, act=None)


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
        shortcut: str = "proj",
    ) -> None:
        super().__init__()
        mid = int(round(out_chs * bottle_ratio))
        self.out_chs = out_chs
        self.conv1 = ConvBNAct(in_chs, mid, 1, act=act, leaky_slope=leaky_slope)
        self.conv2 = ConvBNAct(mid, mid, 3, stride, groups=groups, act=act, leaky_slope=leaky_slope)
        self.conv3 = ConvBNAct(mid, out_chs, 1, act=None)
        # projection shortcut only where the shape changes (first block of a ResNet stage)
        self.downsample = _shortcut(in_chs, out_chs, stride, shortcut)
        self.act3 = make_act(act, leaky_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.act3(self.conv3(self.conv2(self.conv1(x))) + shortcut)

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
        shortcut: str = "proj",
    ) -> None:
        super().__init__()
        mid = int(round(out_chs * bottle_ratio))
        self.out_chs = out_chs
        self.conv1 = ConvBNAct(in_chs, mid, 3, stride, groups=groups, act=act, leaky_slope=leaky_slope)
        self.conv2 = ConvBNAct(mid, out_chs, 3, act=None)
        self.downsample = _shortcut(in_chs, out_chs, stride, shortcut)
        self.act2 = make_act(act, leaky_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.act2(self.conv2(self.conv1(x)) + shortcut)

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
        # out of place: the conv's output is its in-place activation's, which autograd saved for backward
        return self.conv2(self.conv1(x)) + x

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv2.bn.weight)


def _growth(in_chs: int, out_chs: int, stride: int, name: str) -> int:
    if stride != 1:
        raise ConfigError(f"a {name} keeps its resolution; downsample with the stage's down='avgpool'")
    if out_chs <= in_chs:
        raise ConfigError(f"a {name} grows its input: out_chs ({out_chs}) must exceed in_chs ({in_chs})")
    return out_chs - in_chs


class DenseLayer(nn.Module):
    """DenseNet-BC layer, pre-activation: BN-act-1x1 (bottle_ratio x growth), BN-act-3x3 (growth); concat input."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int = 1,
        bottle_ratio: float = 4.0,
        groups: int = 1,
        act: str = "relu",
        leaky_slope: float = 0.01,
    ) -> None:
        super().__init__()
        growth = _growth(in_chs, out_chs, stride, "dense layer")
        mid = int(round(growth * bottle_ratio))  # DenseNet's bn_size=4
        self.out_chs = out_chs
        self.conv1 = BNActConv(in_chs, mid, 1, act=act, leaky_slope=leaky_slope)
        self.conv2 = BNActConv(mid, growth, 3, groups=groups, act=act, leaky_slope=leaky_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv2(self.conv1(x))], 1)


class TwoWayDenseLayer(nn.Module):
    """PeleeNet two-way dense layer, post-activation: 1x1-3x3 and 1x1-3x3-3x3 branches, growth/2 each; concat input."""

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
        growth = _growth(in_chs, out_chs, stride, "two-way dense layer")
        if growth % 2:
            raise ConfigError(f"a two-way dense layer splits its growth in two; got an odd growth {growth}")
        half = growth // 2
        # Pelee: bottleneck = half-growth x width (a multiple of 4), capped so it never exceeds half the input
        mid = max(int(half * bottle_ratio / 4) * 4, 4)  # the floor: a tiny growth would round to a zero-width conv
        if mid > in_chs / 2:
            mid = max(int(in_chs / 8) * 4, 4)
        kw = dict(act=act, leaky_slope=leaky_slope)
        self.out_chs = out_chs
        self.branch1a = ConvBNAct(in_chs, mid, 1, **kw)
        self.branch1b = ConvBNAct(mid, half, 3, groups=groups, **kw)
        self.branch2a = ConvBNAct(in_chs, mid, 1, **kw)
        self.branch2b = ConvBNAct(mid, half, 3, groups=groups, **kw)
        self.branch2c = ConvBNAct(half, half, 3, groups=groups, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1b(self.branch1a(x))
        b2 = self.branch2c(self.branch2b(self.branch2a(x)))
        return torch.cat([x, b1, b2], 1)


BlockFn = Callable[..., nn.Module]
BLOCKS: dict[str, BlockFn] = {
    "bottleneck": Bottleneck,
    "basic": BasicBlock,
    "dark": DarkBlock,
    "dense": DenseLayer,
    "dense2": TwoWayDenseLayer,
}


def register_block(name: str) -> Callable[[BlockFn], BlockFn]:
    """Class decorator: make a block usable as StageCfg(block=name). Protocol: docs/custom_blocks.md."""

    def wrap(block_fn: BlockFn) -> BlockFn:
        BLOCKS[name] = block_fn
        return block_fn

    return wrap


def get_block(block: str | BlockFn) -> BlockFn:
    """Look up a block type by name; a class (or factory) is used as it is."""
    if callable(block):
        return block
    try:
        return BLOCKS[block]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown block type {block!r}; choose one of {', '.join(BLOCKS)}, or register yours with register_block"
        ) from None
