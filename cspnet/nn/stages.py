"""Stages: `CrossStage` is the CSP idea, for any block type; partial_ratio=1.0 builds the plain stage."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cspnet.errors import ConfigError
from cspnet.nn.blocks import get_block
from cspnet.nn.layers import BNActConv, ConvBNAct

FUSIONS = ("both", "first", "last")
DOWNS = ("conv", "block", "avgpool")
TRANSITIONS = ("conv", "preact")


@dataclass(frozen=True)
class StageCfg:
    """One stage. `partial_ratio` is the paper's gamma: the share of channels routed through the blocks."""

    depth: int
    out_chs: int
    stride: int = 2
    block: str | type = "bottleneck"  # a registered name (register_block) or a block class
    partial_ratio: float = 0.5
    fusion: str = "both"  # paper Fig. 3: transition->concat->transition, concat->transition, transition->concat
    expand_ratio: float = 1.0  # width of the split conv (`conv_exp`, the 1x1 that feeds the split), relative to out_chs
    bottle_ratio: float = 1.0  # blocks' inner width / what that conv path emits (out_chs; dense: growth), see blocks.py
    groups: int = 1
    down: str = "conv"  # plain stages: "conv" = a 3x3 stride conv first (darknet), "block" = in the first block;
    # "avgpool" = a 2x2 average pool first, plain and CSP (DenseNet/PeleeNet: the pool ending their transition layer)
    down_growth: bool = False  # conv_down goes straight to out_chs (timm's cspdarknet53)
    cross_linear: bool = False  # no activation after the split conv (timm's cspresnet/cspresnext)
    growth_rate: int = 0  # dense blocks: channels each block adds; 0 for residual blocks
    split_conv: bool = True  # False: split the input's channels directly, no 1x1 first (CSPDenseNet, paper Fig. 2b)
    transition: str = "conv"  # 1x1 transition layers: "conv" = conv-BN-act, "preact" = BN-act-conv (DenseNet)
    transition_ratio: float = 1.0  # fusion "both": blocks' transition width / blocks' output (DenseNet compression)
    block_in_chs: int = 0  # darknet's first CSP stage: a narrower block part, widened by the first block (pad shortcut)
    plain_transition: bool = False  # plain stage ends with a 1x1 transition to out_chs (paper Fig. 3a; DenseNet, Pelee)

    def __post_init__(self) -> None:
        if not 0.0 < self.partial_ratio <= 1.0:
            raise ConfigError(
                f"partial_ratio must be in (0, 1], got {self.partial_ratio}; 1.0 is the plain stage, 0.5 the paper's"
            )
        if self.fusion not in FUSIONS:
            raise ConfigError(f"unknown fusion {self.fusion!r}; choose one of {', '.join(FUSIONS)}")
        if self.down not in DOWNS:
            raise ConfigError(f"unknown down {self.down!r}; choose one of {', '.join(DOWNS)}")
        if self.transition not in TRANSITIONS:
            raise ConfigError(f"unknown transition {self.transition!r}; choose one of {', '.join(TRANSITIONS)}")
        if self.transition_ratio <= 0:
            raise ConfigError(f"transition_ratio must be > 0, got {self.transition_ratio}; 1.0 keeps the width")
        get_block(self.block)
        if self.block_in_chs and self.block not in ("bottleneck", "basic"):
            raise ConfigError(f"block_in_chs needs residual blocks (bottleneck, basic), not {self.block!r}")

    @property
    def is_csp(self) -> bool:
        return self.partial_ratio < 1.0


def _make_blocks(cfg: StageCfg, in_chs: int, width: int, act: str, slope: float, stride: int = 1):
    """Stack `cfg.depth` blocks; residual blocks keep `width`, dense blocks grow by `growth_rate`."""
    block_fn = get_block(cfg.block)
    blocks = nn.Sequential()
    prev = in_chs
    for i in range(cfg.depth):
        out = prev + cfg.growth_rate if cfg.growth_rate else width
        blocks.add_module(
            str(i),
            block_fn(
                prev,
                out,
                stride=stride if i == 0 else 1,
                bottle_ratio=cfg.bottle_ratio,
                groups=cfg.groups,
                act=act,
                leaky_slope=slope,
                **({"shortcut": "pad"} if i == 0 and cfg.block_in_chs else {}),
            ),
        )
        prev = getattr(blocks[i], "out_chs", None)
        if not isinstance(prev, int):
            raise ConfigError(
                f"block {type(blocks[i]).__name__} must set self.out_chs (int): see docs/custom_blocks.md"
            )
    return blocks, prev


def _transition(cfg: StageCfg, in_chs: int, out_chs: int, kw: dict) -> nn.Module:
    """A 1x1 transition layer in the stage's style: conv-BN-act, or pre-activation BN-act-conv (DenseNet)."""
    return (BNActConv if cfg.transition == "preact" else ConvBNAct)(in_chs, out_chs, 1, **kw)


def _avgpool(stride: int) -> nn.Module:
    return nn.AvgPool2d(stride, stride)


class CrossStage(nn.Module):
    """Cross Stage Partial stage: split, run one part through the blocks, fuse with the other part.

    With partial_ratio=1.0 there is no split and no transition: the plain stage of the twin model.
    """

    def __init__(self, in_chs: int, cfg: StageCfg, act: str = "relu", leaky_slope: float = 0.01) -> None:
        super().__init__()
        self.cfg = cfg
        self.out_chs = cfg.out_chs
        kw = dict(act=act, leaky_slope=leaky_slope)
        stride = cfg.stride

        if not cfg.is_csp:
            self.split = None
            if stride != 1 and cfg.down == "conv":
                self.conv_down = ConvBNAct(in_chs, cfg.out_chs, 3, stride, groups=cfg.groups, **kw)
                in_chs, stride = cfg.out_chs, 1
            elif stride != 1 and cfg.down == "avgpool":
                self.conv_down = _avgpool(stride)
                stride = 1
            else:
                self.conv_down = nn.Identity()
            self.blocks, out = _make_blocks(cfg, in_chs, cfg.out_chs, act, leaky_slope, stride)
            if cfg.plain_transition:  # rides at the end of blocks so forward stays one call
                self.blocks.add_module("transition", _transition(cfg, out, cfg.out_chs, kw))
                out = cfg.out_chs
            self.out_chs = out  # dense plain stages end on their own width
            return

        if stride != 1 and cfg.down == "avgpool":
            self.conv_down = _avgpool(stride)
        elif stride != 1:
            down_chs = cfg.out_chs if cfg.down_growth else in_chs
            self.conv_down = ConvBNAct(in_chs, down_chs, 3, stride, groups=cfg.groups, **kw)
            in_chs = down_chs
        else:
            self.conv_down = nn.Identity()

        exp_chs = int(round(cfg.out_chs * cfg.expand_ratio)) if cfg.split_conv else in_chs
        block_chs = int(round(exp_chs * cfg.partial_ratio))
        if cfg.fusion == "last" and cfg.split_conv:
            # output is concat(cross, transition_b): the cross part is a share of out_chs
            cross_chs = int(round(cfg.out_chs * (1.0 - cfg.partial_ratio)))
        else:
            cross_chs = exp_chs - block_chs
        if min(block_chs, cross_chs) < 1:
            raise ConfigError(
                f"partial_ratio={cfg.partial_ratio} leaves an empty part of {exp_chs} channels; pick a ratio "
                "that keeps at least one channel on each path"
            )
        if cfg.fusion == "last" and cfg.out_chs <= cross_chs:
            raise ConfigError(
                f"fusion='last' needs out_chs ({cfg.out_chs}) above the cross part ({cross_chs} channels); "
                "raise out_chs or partial_ratio"
            )
        block_in = cfg.block_in_chs or block_chs
        self.split = (cross_chs, block_in)  # channels of the split conv's output, in order: cross part, block part
        if cfg.split_conv:
            self.conv_exp = ConvBNAct(
                in_chs, cross_chs + block_in, 1, **{**kw, "act": None if cfg.cross_linear else act}
            )
        else:
            self.conv_exp = nn.Identity()
        self.blocks, blocks_out = _make_blocks(cfg, block_in, block_chs, act, leaky_slope)

        if cfg.fusion == "first":
            self.conv_transition_b = None
            self.conv_transition = _transition(cfg, cross_chs + blocks_out, cfg.out_chs, kw)
        elif cfg.fusion == "last":
            self.conv_transition_b = _transition(cfg, blocks_out, cfg.out_chs - cross_chs, kw)
            self.conv_transition = None
        else:
            trans_chs = int(round(blocks_out * cfg.transition_ratio))  # residual blocks: blocks_out == block_chs
            self.conv_transition_b = _transition(cfg, blocks_out, trans_chs, kw)
            self.conv_transition = _transition(cfg, cross_chs + trans_chs, cfg.out_chs, kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_down(x)
        if self.split is None:
            return self.blocks(x)
        xs, xb = self.split_parts(x)
        xb = self.blocks(xb)
        if self.conv_transition_b is not None:
            xb = self.conv_transition_b(xb)
        x = torch.cat([xs, xb], dim=1)
        if self.conv_transition is not None:
            x = self.conv_transition(x)
        return x

    def split_parts(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The split conv's output cut into (cross part, block part); the fused stage computes them apart."""
        return self.conv_exp(x).split(self.split, dim=1)
