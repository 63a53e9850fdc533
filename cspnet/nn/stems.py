"""Stems that are more than one conv (the plain conv stems are built from ConvBNAct in models/net.py)."""

from __future__ import annotations

import torch
from torch import nn

from cspnet.errors import ConfigError
from cspnet.nn.layers import ConvBNAct


class PeleeStem(nn.Module):
    """PeleeNet stem block (stride 4): 3x3/2 conv, then [2x2 max pool | 1x1 -> 3x3/2] concatenated, 1x1 fuse."""

    def __init__(self, in_chs: int, out_chs: int = 32, stride: int = 4, act: str = "relu", leaky_slope: float = 0.01):
        super().__init__()
        if stride not in (1, 4):
            raise ConfigError(f"the Pelee stem has stride 4 (or 1 for small inputs), got {stride}")
        s = 2 if stride == 4 else 1
        kw = dict(act=act, leaky_slope=leaky_slope)
        self.stem1 = ConvBNAct(in_chs, out_chs, 3, s, **kw)
        self.stem2a = ConvBNAct(out_chs, out_chs // 2, 1, **kw)
        self.stem2b = ConvBNAct(out_chs // 2, out_chs, 3, s, **kw)
        self.pool = nn.MaxPool2d(2, 2) if s == 2 else nn.Identity()
        self.stem3 = ConvBNAct(2 * out_chs, out_chs, 1, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem1(x)
        return self.stem3(torch.cat([self.pool(x), self.stem2b(self.stem2a(x))], 1))
