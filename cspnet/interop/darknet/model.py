"""DarknetModel: the network a darknet `.cfg` describes, as a PyTorch module that computes what darknet computes.

Layers are numbered as darknet numbers them (the first section after `[net]` is layer 0), and each one lists the
tensors of its `.weights` record in darknet's order (`weight_tensors`).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cspnet.errors import ConfigError, InputError
from cspnet.interop.darknet.cfg import Section, parse_cfg
from cspnet.models.net import check_input
from cspnet.nn.layers import make_act

Shape = tuple[int, int, int]  # (channels, height, width) of one layer's output

ACTIVATIONS = ("linear", "leaky", "relu", "mish", "swish", "logistic", "tanh")

# options that change what a layer computes and that this reader does not implement; value = the harmless value
_UNSUPPORTED = {
    "convolutional": {
        "dilation": "1",
        "binary": "0",
        "xnor": "0",
        "share_index": None,
        "antialiasing": "0",
        "deform": "0",
        "stride_x": None,
        "stride_y": None,
        "coordconv": "0",
        "sway": "0",
        "rotate": "0",
        "stretch": "0",
        "stretch_sway": "0",
        "assisted_excitation": "0",
    },
    "maxpool": {"maxpool_depth": "0", "antialiasing": "0", "stride_x": None, "stride_y": None},
    "shortcut": {"weights_type": "none"},
    "softmax": {"tree": None, "spatial": "0"},
    "dropout": {"dropblock": "0"},
    "upsample": {"reverse": "0"},
}


def darknet_act(name: str, sec: Section) -> nn.Module:
    """A cfg's activation from the one factory (cspnet.nn.layers.make_act): leaky slope 0.1, not in place."""
    if name not in ACTIVATIONS:
        raise sec.error(f"activation `{name}` is not supported; use one of {', '.join(ACTIVATIONS)}")
    return make_act(name, leaky_slope=0.1, inplace=False)


class DarkLayer(nn.Module):
    """A layer of the graph: reads the previous output `x` and, through `sources`, earlier layers' outputs."""

    sources: tuple[int, ...] = ()
    desc: str = ""

    def weight_tensors(self) -> list[torch.Tensor]:
        """This layer's tensors in `.weights` order (empty for layers without weights)."""
        return []


class Conv(DarkLayer):
    """[convolutional]: conv (bias only without BN), optional BN, activation."""

    def __init__(self, in_c: int, filters: int, size: int, stride: int, padding: int, groups: int, bn: bool, act):
        super().__init__()
        self.conv = nn.Conv2d(in_c, filters, size, stride, padding, groups=groups, bias=not bn)
        self.bn = nn.BatchNorm2d(filters) if bn else nn.Identity()  # eps 1e-5 as darknet's normalize_cpu
        self.act = act

    def forward(self, x: torch.Tensor, outs: dict) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    def weight_tensors(self) -> list[torch.Tensor]:
        if isinstance(self.bn, nn.BatchNorm2d):  # darknet: biases (= BN beta), scales, mean, variance, weights
            return [self.bn.bias, self.bn.weight, self.bn.running_mean, self.bn.running_var, self.conv.weight]
        return [self.conv.bias, self.conv.weight]


class Connected(DarkLayer):
    """[connected]: a fully connected layer over the flattened (C, H, W) input."""

    def __init__(self, inputs: int, outputs: int, bn: bool, act):
        super().__init__()
        self.fc = nn.Linear(inputs, outputs, bias=not bn)
        self.bn = nn.BatchNorm1d(outputs) if bn else nn.Identity()
        self.act = act

    def forward(self, x: torch.Tensor, outs: dict) -> torch.Tensor:
        return self.act(self.bn(self.fc(x.flatten(1))))[:, :, None, None]

    def weight_tensors(self) -> list[torch.Tensor]:
        if isinstance(self.bn, nn.BatchNorm1d):  # darknet: biases, weights, then scales, mean, variance
            return [self.bn.bias, self.fc.weight, self.bn.weight, self.bn.running_mean, self.bn.running_var]
        return [self.fc.bias, self.fc.weight]


class Route(DarkLayer):
    """[route]: concatenate earlier outputs; with `groups`, take chunk `group_id` of each one's channels."""

    def __init__(self, sources: list[int], groups: int = 1, group_id: int = 0):
        super().__init__()
        self.sources, self.groups, self.group_id = tuple(sources), groups, group_id

    def forward(self, x: torch.Tensor, outs: dict) -> torch.Tensor:
        parts = [outs[i] for i in self.sources]
        if self.groups > 1:
            parts = [p.chunk(self.groups, dim=1)[self.group_id] for p in parts]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


class Shortcut(DarkLayer):
    """[shortcut]: add earlier outputs to the previous one, then the activation.

    Shapes that differ follow the original darknet (shortcut_cpu): the larger map is sampled with the integer
    stride between the two and only the channels both have are added; AlexeyAB's darknet refuses such cfgs.
    """

    def __init__(self, sources: list[int], act: nn.Module):
        super().__init__()
        self.sources, self.act = tuple(sources), act

    def forward(self, x: torch.Tensor, outs: dict) -> torch.Tensor:
        for i in self.sources:
            add = outs[i]
            if add.shape == x.shape:
                x = x + add
                continue
            stride, sample = max(add.shape[3] // x.shape[3], 1), max(x.shape[3] // add.shape[3], 1)
            c = min(add.shape[1], x.shape[1])
            h, w = min(add.shape[2], x.shape[2]), min(add.shape[3], x.shape[3])
            x = x.clone()
            x[:, :c, : h * sample : sample, : w * sample : sample] += add[:, :c, ::stride, ::stride][:, :, :h, :w]
        return self.act(x)


class MaxPool(DarkLayer):
    """[maxpool] with darknet's padding: `padding` (default size-1) split as padding//2 before, the rest after."""

    def __init__(self, size: int, stride: int, padding: int):
        super().__init__()
        self.size, self.stride, self.padding = size, stride, padding

    def forward(self, x: torch.Tensor, outs: dict) -> torch.Tensor:
        lo = self.padding // 2
        if self.padding:
            x = F.pad(x, (lo, self.padding - lo, lo, self.padding - lo), value=float("-inf"))
        return F.max_pool2d(x, self.size, self.stride)


class AvgPool(DarkLayer):
    """[avgpool]: global average over H and W."""

    def forward(self, x: torch.Tensor, outs: dict) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=True)


class Upsample(DarkLayer):
    """[upsample]: nearest-neighbour by `stride`, times `scale`."""

    def __init__(self, stride: int, scale: float = 1.0):
        super().__init__()
        self.stride, self.scale = stride, scale

    def forward(self, x: torch.Tensor, outs: dict) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=self.stride, mode="nearest")
        return x * self.scale if self.scale != 1.0 else x


class Softmax(DarkLayer):
    """[softmax]: softmax over the flattened input, in `groups` equal parts; output (N, C*H*W)."""

    def __init__(self, groups: int = 1, temperature: float = 1.0):
        super().__init__()
        self.groups, self.temperature = groups, temperature

    def forward(self, x: torch.Tensor, outs: dict) -> torch.Tensor:
        x = x.flatten(1)
        if self.temperature != 1.0:
            x = x / self.temperature
        return x.view(x.shape[0], self.groups, -1).softmax(-1).flatten(1)


class Dropout(DarkLayer):
    """[dropout]: inverted dropout in training (as darknet), identity in eval."""

    def __init__(self, p: float):
        super().__init__()
        self.drop = nn.Dropout(p)

    def forward(self, x: torch.Tensor, outs: dict) -> torch.Tensor:
        return self.drop(x)


class Passthrough(DarkLayer):
    """[cost]: training only; the output is the input."""

    def forward(self, x: torch.Tensor, outs: dict) -> torch.Tensor:
        return x


class Yolo(DarkLayer):
    """[yolo]: darknet's forward_yolo_layer activations; `decode` turns them into boxes in input pixels.

    xy = sigmoid(t) * scale_x_y - (scale_x_y - 1) / 2 (plus the cell), wh = exp(t) * anchor, objectness and
    classes sigmoid. With new_coords=1 (Scaled-YOLOv4) the conv already applied the logistic: no sigmoid here,
    wh = 4 * t^2 * anchor.
    """

    def __init__(self, anchors: list[tuple[float, float]], classes: int, scale_x_y: float = 1.0, new_coords: int = 0):
        super().__init__()
        self.num_anchors, self.classes = len(anchors), classes
        self.anchor_pairs = tuple((float(w), float(h)) for w, h in anchors)  # also on the meta device
        self.scale_x_y, self.new_coords = scale_x_y, bool(new_coords)
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32), persistent=False)

    def forward(self, x: torch.Tensor, outs: dict) -> torch.Tensor:
        n, _, h, w = x.shape
        p = x.view(n, self.num_anchors, 5 + self.classes, h, w)
        xy, wh, rest = p[:, :, :2], p[:, :, 2:4], p[:, :, 4:]
        if not self.new_coords:
            xy, rest = xy.sigmoid(), rest.sigmoid()
        s = self.scale_x_y
        xy = xy * s - 0.5 * (s - 1.0)
        return torch.cat([xy, wh, rest], dim=2).view(n, -1, h, w)

    def decode(self, y: torch.Tensor, img_hw: tuple[int, int]) -> torch.Tensor:
        """(N, A*(5+C), H, W) activations -> (N, A*H*W, 5+C): cx, cy, w, h in input pixels, objectness, classes."""
        n, _, h, w = y.shape
        p = y.view(n, self.num_anchors, 5 + self.classes, h, w).permute(0, 1, 3, 4, 2)
        gy, gx = torch.meshgrid(
            torch.arange(h, device=y.device, dtype=y.dtype),
            torch.arange(w, device=y.device, dtype=y.dtype),
            indexing="ij",
        )
        cx = (p[..., 0] + gx) * (img_hw[1] / w)
        cy = (p[..., 1] + gy) * (img_hw[0] / h)
        anchors = self.anchors.to(y.dtype)[None, :, None, None, :]
        wh = 4 * p[..., 2:4] ** 2 * anchors if self.new_coords else p[..., 2:4].exp() * anchors
        return torch.cat([cx[..., None], cy[..., None], wh, p[..., 4:]], dim=-1).reshape(n, -1, 5 + self.classes)


def _check_options(sec: Section) -> None:
    for key, neutral in _UNSUPPORTED.get(sec.kind, {}).items():
        if key in sec.options and sec.options[key] != neutral:
            if key in ("stride_x", "stride_y") and sec.options[key] == sec.options.get("stride", "1"):
                continue
            raise sec.error(
                f"option `{key}={sec.options[key]}` is not supported by cspnet's darknet reader; remove it or convert the model with darknet first"
            )


def _ratio(a: int, b: int) -> int | None:
    """Integer scale between two sizes (negative when a < b), None when neither divides the other."""
    if a >= b:
        return a // b if a % b == 0 else None
    return -(b // a) if b % a == 0 else None


def _sources(sec: Section, key: str, index: int) -> list[int]:
    out = []
    for v in sec.getints(key):
        i = index + v if v < 0 else v
        if not 0 <= i < index:
            raise sec.key_error(
                key, f"`{key}` refers to layer {v} (= {i}), which is not an earlier layer of 0..{index - 1}"
            )
        out.append(i)
    if not out:
        raise sec.error(f"`{key}=` lists no layers")
    return out


def _build_layer(sec: Section, index: int, shapes: list[Shape]) -> tuple[DarkLayer, Shape]:
    """One section -> (module, output shape), checking it against the shapes before it."""
    _check_options(sec)
    c, h, w = shapes[-1]
    kind = sec.kind
    if kind == "convolutional":
        filters, size = sec.getint("filters", 1, lo=1), sec.getint("size", 1, lo=1)
        stride, groups = sec.getint("stride", 1, lo=1), sec.getint("groups", 1, lo=1)
        padding = size // 2 if sec.getint("pad", 0) else sec.getint("padding", 0, lo=0)
        bn = bool(sec.getint("batch_normalize", 0))
        if groups < 1 or c % groups or filters % groups:
            raise sec.error(f"groups={groups} must divide the {c} input channels and filters={filters}")
        oh, ow = (h + 2 * padding - size) // stride + 1, (w + 2 * padding - size) // stride + 1
        if oh < 1 or ow < 1:
            raise sec.error(f"a {size}x{size} kernel does not fit the {h}x{w} input; use a larger input size")
        layer = Conv(
            c, filters, size, stride, padding, groups, bn, darknet_act(sec.getstr("activation", "logistic"), sec)
        )
        layer.desc = f"{filters} {size}x{size}/{stride}" + (f" g{groups}" if groups > 1 else "")
        return layer, (filters, oh, ow)
    if kind == "route":
        srcs = _sources(sec, "layers", index)
        groups, group_id = sec.getint("groups", 1, lo=1), sec.getint("group_id", 0)
        if not 0 <= group_id < groups:
            raise sec.error(f"group_id={group_id} must be in 0..groups-1 (groups={groups})")
        first = shapes[srcs[0] + 1]
        for i in srcs:
            if shapes[i + 1][1:] != first[1:]:
                raise sec.error(f"layers {srcs[0]} and {i} have different sizes {first[1:]} and {shapes[i + 1][1:]}")
            if shapes[i + 1][0] % groups:
                raise sec.error(f"groups={groups} does not divide the {shapes[i + 1][0]} channels of layer {i}")
        layer = Route(srcs, groups, group_id)
        layer.desc = ",".join(str(i) for i in srcs) + (f" group {group_id}/{groups}" if groups > 1 else "")
        return layer, (sum(shapes[i + 1][0] // groups for i in srcs), first[1], first[2])
    if kind == "shortcut":
        srcs = _sources(sec, "from", index)
        for i in srcs:
            sc, sh, sw = shapes[i + 1]
            if _ratio(sh, h) is None or _ratio(sh, h) != _ratio(sw, w):
                raise sec.error(f"cannot add layer {i} ({sc}x{sh}x{sw}) to layer {index - 1} ({c}x{h}x{w})")
        layer = Shortcut(srcs, darknet_act(sec.getstr("activation", "linear"), sec))
        layer.desc = "from " + ",".join(str(i) for i in srcs)
        return layer, (c, h, w)
    if kind == "maxpool":
        stride = sec.getint("stride", 1, lo=1)
        size = sec.getint("size", stride, lo=1)
        padding = sec.getint("padding", size - 1, lo=0)
        oh, ow = (h + padding - size) // stride + 1, (w + padding - size) // stride + 1
        if oh < 1 or ow < 1 or size < 1 or stride < 1:
            raise sec.error(f"size={size} stride={stride} does not fit the {h}x{w} input")
        layer = MaxPool(size, stride, padding)
        layer.desc = f"{size}x{size}/{stride} pad {padding}"
        return layer, (c, oh, ow)
    if kind == "avgpool":
        return AvgPool(), (c, 1, 1)
    if kind == "upsample":
        stride = sec.getint("stride", 2)
        if stride < 1:
            raise sec.key_error("stride", f"stride={stride} (downsampling) is not supported; use stride >= 1")
        layer = Upsample(stride, sec.getfloat("scale", 1.0))
        layer.desc = f"x{stride}"
        return layer, (c, h * stride, w * stride)
    if kind == "connected":
        outputs = sec.getint("output", 1, lo=1)
        act = darknet_act(sec.getstr("activation", "logistic"), sec)
        layer = Connected(c * h * w, outputs, bool(sec.getint("batch_normalize", 0)), act)
        layer.desc = f"{c * h * w} -> {outputs}"
        return layer, (outputs, 1, 1)
    if kind == "softmax":
        groups = sec.getint("groups", 1, lo=1)
        if (c * h * w) % groups:
            raise sec.error(f"groups={groups} does not divide the {c * h * w} inputs")
        temperature = sec.getfloat("temperature", 1.0)
        if temperature <= 0:
            raise sec.key_error("temperature", f"`temperature={temperature:g}` must be > 0")
        return Softmax(groups, temperature), (c * h * w, 1, 1)
    if kind == "dropout":
        return Dropout(sec.getfloat("probability", 0.2, lo=0, hi=1, hi_open=True)), (c, h, w)
    if kind == "cost":
        return Passthrough(), (c, h, w)
    if kind == "yolo":
        classes, num = sec.getint("classes", 20, lo=1), sec.getint("num", 1, lo=1)
        mask = sec.getints("mask", list(range(num)))
        anchors = sec.getfloats("anchors")
        if len(anchors) < 2 * num or any(not 0 <= m < num for m in mask):
            raise sec.error(f"needs num={num} anchor pairs and mask indices in 0..{num - 1}")
        if c != len(mask) * (classes + 5):
            raise sec.error(
                f"the layer before has {c} filters but {len(mask)} anchors x ({classes} classes + 5) = "
                f"{len(mask) * (classes + 5)} are needed; set filters={len(mask) * (classes + 5)} there"
            )
        pairs = [(anchors[2 * m], anchors[2 * m + 1]) for m in mask]
        layer = Yolo(pairs, classes, sec.getfloat("scale_x_y", 1.0), sec.getint("new_coords", 0))
        layer.desc = f"classes {classes} mask {','.join(map(str, mask))}"
        return layer, (c, h, w)
    raise sec.error(
        "layer type is not supported; supported: convolutional, route, shortcut, maxpool, avgpool, upsample, "
        "connected, softmax, dropout, cost, yolo"
    )


class DarknetModel(nn.Module):
    """The network of a darknet cfg. forward: a classifier's last output, or a detector's decoded yolo boxes."""

    def __init__(self, sections: list[Section], img_size: int | tuple[int, int] | None = None) -> None:
        super().__init__()
        net = sections[0]
        self.sections = sections
        self.path = net.path
        self.in_chans = net.getint("channels", 3, lo=1)
        if img_size is None:
            img_size = (net.getint("height", 0), net.getint("width", 0))
        self.img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        if min(self.img_size) < 1:
            raise net.error("needs width= and height= (the input size); add them or pass img_size")
        shapes: list[Shape] = [(self.in_chans, *self.img_size)]  # shapes[i + 1] is layer i's output
        self.layers = nn.ModuleList()
        for index, sec in enumerate(sections[1:]):
            layer, shape = _build_layer(sec, index, shapes)
            layer.kind = sec.kind
            self.layers.append(layer)
            shapes.append(shape)
        if not len(self.layers):
            raise ConfigError(f"{self.path}: the cfg has a [net] section but no layers; add layers after [net]")
        self.shapes = shapes[1:]
        self.yolo_layers = [i for i, m in enumerate(self.layers) if isinstance(m, Yolo)]
        self._fixed_size = any(isinstance(m, Connected) for m in self.layers)
        needed = {i for m in self.layers for i in m.sources}
        self._keep = needed | set(self.yolo_layers)

    @classmethod
    def from_cfg(cls, path: str | Path, img_size: int | tuple[int, int] | None = None) -> DarknetModel:
        return cls(parse_cfg(path), img_size)

    @property
    def is_detector(self) -> bool:
        return bool(self.yolo_layers)

    def check_input(self, x: torch.Tensor) -> None:
        check_input(x, self.in_chans, f"the cfg's [net] sets channels={self.in_chans}")
        if self._fixed_size and tuple(x.shape[2:]) != self.img_size:
            raise InputError(
                f"this cfg has a [connected] layer built for {self.img_size[0]}x{self.img_size[1]} inputs, got "
                f"{x.shape[2]}x{x.shape[3]}; resize the images or build with img_size"
            )

    def forward_layers(self, x: torch.Tensor, keep_all: bool = False) -> list[torch.Tensor | None]:
        """Every layer's output (None for ones nothing reads later, unless keep_all)."""
        self.check_input(x)
        outs: dict[int, torch.Tensor] = {}
        result: list[torch.Tensor | None] = []
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x, outs)
            if keep_all or i in self._keep or i == last:
                outs[i] = x
            result.append(outs.get(i))
        return result

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = self.forward_layers(x)
        if not self.yolo_layers:
            return outs[-1]
        hw = (x.shape[2], x.shape[3])
        return torch.cat([self.layers[i].decode(outs[i], hw) for i in self.yolo_layers], dim=1)

    def weight_tensors(self) -> list[torch.Tensor]:
        """All tensors of the `.weights` payload, in file order."""
        return [t for layer in self.layers for t in layer.weight_tensors()]

    def num_weight_values(self) -> int:
        return sum(t.numel() for t in self.weight_tensors())
