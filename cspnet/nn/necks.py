"""Detection pieces: SPP, the PANet neck (plain or CSP), yolov4-tiny's backbone stage and neck.

Concat orders follow darknet's [route] layers, so `.weights` map onto these modules without reordering
(cspnet/interop/darknet/native.py lists each cfg's layer order).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cspnet.errors import ConfigError
from cspnet.nn.layers import ConvBNAct


class PlainDarkBlock(nn.Module):
    """1x1 reduce, 3x3 restore, no residual: the block inside Scaled-YOLOv4's CSP neck."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int = 1,
        bottle_ratio: float = 1.0,
        groups: int = 1,
        act: str = "mish",
        leaky_slope: float = 0.01,
    ) -> None:
        super().__init__()
        mid = int(round(out_chs * bottle_ratio))
        self.out_chs = out_chs
        self.conv1 = ConvBNAct(in_chs, mid, 1, act=act, leaky_slope=leaky_slope)
        self.conv2 = ConvBNAct(mid, out_chs, 3, stride, groups=groups, act=act, leaky_slope=leaky_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class SPP(nn.Module):
    """Spatial pyramid pooling: stride-1 max pools, concatenated [largest, ..., smallest, input] as YOLOv4's route.

    Sizes k, 2k-1, 3k-2 (5/9/13) are computed as repeated k-pools (SPPF): the same maxima, a third of the work.
    """

    def __init__(self, sizes: tuple[int, ...] = (5, 9, 13)) -> None:
        super().__init__()
        if any(k % 2 == 0 or k < 1 for k in sizes):
            raise ConfigError(f"SPP pool sizes must be odd and positive, got {sizes}")
        self.sizes = tuple(sizes)
        k = self.sizes[0]
        self.cascade = all(s == k + i * (k - 1) for i, s in enumerate(self.sizes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cascade:
            pools, y = [], x
            for _ in self.sizes:
                y = F.max_pool2d(y, self.sizes[0], 1, self.sizes[0] // 2)
                pools.append(y)
        else:
            pools = [F.max_pool2d(x, k, 1, k // 2) for k in self.sizes]
        return torch.cat(pools[::-1] + [x], 1)


def conv_stack(in_chs: int, chs: int, n: int, act: str, slope: float, first_k: int = 1) -> nn.Sequential:
    """n convs alternating 1x1 to `chs` and 3x3 to 2*chs (YOLOv3/v4 neck blocks), starting with a `first_k` conv."""
    layers = nn.Sequential()
    for i in range(n):
        k = first_k if i % 2 == 0 else 4 - first_k
        out = chs if k == 1 else 2 * chs
        layers.add_module(str(i), ConvBNAct(in_chs, out, k, act=act, leaky_slope=slope))
        in_chs = out
    return layers


class SPPBlock(nn.Module):
    """YOLOv4's top of the neck: 1x1-3x3-1x1, SPP, 1x1-3x3-1x1."""

    def __init__(self, in_chs: int, chs: int, sizes=(5, 9, 13), act: str = "leaky", slope: float = 0.1) -> None:
        super().__init__()
        self.pre = conv_stack(in_chs, chs, 3, act, slope)
        self.spp = SPP(sizes)
        self.post = conv_stack(chs * (len(sizes) + 1), chs, 3, act, slope)
        self.out_chs = chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(self.spp(self.pre(x)))


class SPPCSP(nn.Module):
    """Scaled-YOLOv4's SPP as a CSP block: [1x1-3x3-1x1, SPP, 1x1-3x3 | 1x1 cross part], concat, 1x1."""

    def __init__(self, in_chs: int, chs: int, sizes=(5, 9, 13), act: str = "mish", slope: float = 0.1) -> None:
        super().__init__()
        kw = dict(act=act, leaky_slope=slope)
        self.cross = ConvBNAct(in_chs, chs, 1, **kw)
        self.pre = nn.Sequential(
            ConvBNAct(in_chs, chs, 1, **kw), ConvBNAct(chs, chs, 3, **kw), ConvBNAct(chs, chs, 1, **kw)
        )
        self.spp = SPP(sizes)
        self.post = nn.Sequential(ConvBNAct(chs * (len(sizes) + 1), chs, 1, **kw), ConvBNAct(chs, chs, 3, **kw))
        self.transition = ConvBNAct(2 * chs, chs, 1, **kw)
        self.out_chs = chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cross = self.cross(x)
        return self.transition(torch.cat([self.post(self.spp(self.pre(x))), cross], 1))


class CSPFuse(nn.Module):
    """Scaled-YOLOv4's CSP neck block: a 1x1 in; plain dark blocks on it | a 1x1 cross part; concat, 1x1."""

    def __init__(self, in_chs: int, chs: int, depth: int, act: str = "mish", slope: float = 0.1) -> None:
        super().__init__()
        kw = dict(act=act, leaky_slope=slope)
        self.conv = ConvBNAct(in_chs, chs, 1, **kw)
        self.cross = ConvBNAct(chs, chs, 1, **kw)
        self.blocks = nn.Sequential(*(PlainDarkBlock(chs, chs, act=act, leaky_slope=slope) for _ in range(depth)))
        self.transition = ConvBNAct(2 * chs, chs, 1, **kw)
        self.out_chs = chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.transition(torch.cat([self.blocks(x), self.cross(x)], 1))


class PAN(nn.Module):
    """PANet neck with concat fusion (YOLOv4): SPP block on the deepest map, a top-down then a bottom-up path.

    csp=True: Scaled-YOLOv4's CSP neck (SPPCSP, CSP blocks). Outputs one map per input level, shallow to deep,
    with `chs[i]` channels.
    """

    def __init__(
        self,
        in_chs: list[int],
        chs: list[int],
        depth: int = 2,
        spp: tuple[int, ...] = (5, 9, 13),
        csp: bool = False,
        act: str = "leaky",
        slope: float = 0.1,
    ) -> None:
        super().__init__()
        if len(in_chs) != len(chs) or len(chs) < 2:
            raise ConfigError(f"the PAN needs one width per level (>= 2 levels), got {len(chs)} for {len(in_chs)}")
        kw = dict(act=act, leaky_slope=slope)
        n = len(chs)
        top = SPPCSP if csp else SPPBlock
        self.top = top(in_chs[-1], chs[-1], spp, act, slope)

        def block(cin: int, c: int) -> nn.Module:
            return CSPFuse(cin, c, depth, act, slope) if csp else conv_stack(cin, c, 2 * depth + 1, act, slope)

        # index i: the step between level i and level i + 1
        self.reduce = nn.ModuleList(ConvBNAct(chs[i + 1], chs[i], 1, **kw) for i in range(n - 1))
        self.lateral = nn.ModuleList(ConvBNAct(in_chs[i], chs[i], 1, **kw) for i in range(n - 1))
        self.up_blocks = nn.ModuleList(block(2 * chs[i], chs[i]) for i in range(n - 1))
        self.down = nn.ModuleList(ConvBNAct(chs[i], chs[i + 1], 3, 2, **kw) for i in range(n - 1))
        self.down_blocks = nn.ModuleList(block(2 * chs[i + 1], chs[i + 1]) for i in range(n - 1))
        self.out_chs = list(chs)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        x = self.top(feats[-1])
        inner = [x]
        for i in reversed(range(len(self.reduce))):
            up = F.interpolate(self.reduce[i](x), scale_factor=2.0, mode="nearest")
            x = self.up_blocks[i](torch.cat([self.lateral[i](feats[i]), up], 1))
            inner.insert(0, x)
        outs = [x]
        for i in range(len(self.down)):
            x = self.down_blocks[i](torch.cat([self.down[i](x), inner[i + 1]], 1))
            outs.append(x)
        return outs


class TinyStage(nn.Module):
    """yolov4-tiny's CSP-ish stage: 3x3 conv, its second half through two 3x3s, 1x1, concat with the conv, 2x2 pool.

    Returns (pooled output, the 1x1's output): the tiny neck reads the latter at stride 16.
    """

    def __init__(self, in_chs: int, chs: int, act: str = "leaky", slope: float = 0.1) -> None:
        super().__init__()
        if chs % 2:
            raise ConfigError(f"a tiny stage splits its {chs} channels in two halves; use an even width")
        kw = dict(act=act, leaky_slope=slope)
        half = chs // 2
        self.conv = ConvBNAct(in_chs, chs, 3, **kw)
        self.conv1 = ConvBNAct(half, half, 3, **kw)
        self.conv2 = ConvBNAct(half, half, 3, **kw)
        self.transition = ConvBNAct(chs, chs, 1, **kw)
        self.pool = nn.MaxPool2d(2, 2, ceil_mode=True)  # darknet's size=2 stride=2: pads after on odd sizes
        self.out_chs = 2 * chs

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv(x)
        b1 = self.conv1(x[:, x.shape[1] // 2 :])  # darknet [route] groups=2 group_id=1
        b2 = self.conv2(b1)
        t = self.transition(torch.cat([b2, b1], 1))
        return self.pool(torch.cat([x, t], 1)), t


class TinyBackbone(nn.Module):
    """yolov4-tiny's backbone: two stride-2 convs, three tiny stages, a 3x3 conv; features at strides 16 and 32."""

    def __init__(
        self, widths: tuple[int, ...] = (32, 64, 64, 128, 256, 512), in_chans: int = 3, act="leaky", slope=0.1
    ):
        super().__init__()
        kw = dict(act=act, leaky_slope=slope)
        self.in_chans = in_chans
        self.stem = nn.Sequential(
            ConvBNAct(in_chans, widths[0], 3, 2, **kw), ConvBNAct(widths[0], widths[1], 3, 2, **kw)
        )
        prev = widths[1]
        self.stages = nn.ModuleList()
        for c in widths[2:5]:
            self.stages.append(TinyStage(prev, c, act, slope))
            prev = 2 * c
        self.conv = ConvBNAct(prev, widths[5], 3, **kw)
        self.feature_info = [
            dict(num_chs=widths[4], reduction=16, module="stages.2.transition"),
            dict(num_chs=widths[5], reduction=32, module="conv"),
        ]

    @property
    def channels(self) -> list[int]:
        return [f["num_chs"] for f in self.feature_info]

    @property
    def reduction(self) -> list[int]:
        return [f["reduction"] for f in self.feature_info]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        for stage in self.stages:
            x, t = stage(x)
        return [t, self.conv(x)]


class TinyNeck(nn.Module):
    """yolov4-tiny's neck: a 1x1 on the deepest map; it is reduced, upsampled and concatenated after the shallower."""

    def __init__(self, in_chs: list[int], chs: list[int], act: str = "leaky", slope: float = 0.1) -> None:
        super().__init__()
        if len(in_chs) != 2 or len(chs) != 2:
            raise ConfigError("the tiny neck has two levels (strides 16 and 32)")
        kw = dict(act=act, leaky_slope=slope)
        self.top = ConvBNAct(in_chs[1], chs[1], 1, **kw)
        self.reduce = ConvBNAct(chs[1], chs[0], 1, **kw)
        self.out_chs = [chs[0] + in_chs[0], chs[1]]

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        p5 = self.top(feats[1])
        up = F.interpolate(self.reduce(p5), scale_factor=2.0, mode="nearest")
        return [torch.cat([up, feats[0]], 1), p5]
