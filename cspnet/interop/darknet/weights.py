"""Darknet `.weights` files: a header, then every layer's float32 values in the cfg's order.

Header: int32 major, minor, revision, then `seen` (images trained on) as uint64 when major*10+minor >= 2 (and
major, minor < 1000), else uint32. Payload per [convolutional]: biases (the BN beta when batch_normalize), then
BN scales (gamma), rolling mean and variance, then the weights; per [connected]: biases, weights, then the BN
triple. A file whose payload is not exactly what the cfg needs is refused; nothing is loaded in part.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from cspnet.errors import InputError
from cspnet.interop.darknet.model import Connected, Conv, DarknetModel
from cspnet.io import atomic_write


@dataclass(frozen=True)
class DarknetHeader:
    """The `.weights` header. Darknet writes 0.2.0 with a 64-bit `seen`; 0.1.0 files carry a 32-bit one."""

    major: int = 0
    minor: int = 2
    revision: int = 0
    seen: int = 0

    @property
    def wide_seen(self) -> bool:
        return self.major * 10 + self.minor >= 2 and self.major < 1000 and self.minor < 1000

    @property
    def transposed(self) -> bool:
        """Very old files store [connected] weights as (inputs, outputs)."""
        return self.major > 1000 or self.minor > 1000

    @property
    def nbytes(self) -> int:
        return 12 + (8 if self.wide_seen else 4)

    def pack(self) -> bytes:
        return struct.pack("<3i", self.major, self.minor, self.revision) + struct.pack(
            "<Q" if self.wide_seen else "<I", self.seen
        )


def read_header(data: bytes, source: str = "weights") -> DarknetHeader:
    """Parse the header at the start of `data`."""
    if len(data) < 12:
        raise InputError(
            f"{source}: {len(data)} bytes is too short for a darknet header (12-20 bytes); not a .weights file"
        )
    major, minor, revision = struct.unpack_from("<3i", data)
    head = DarknetHeader(major, minor, revision)
    if len(data) < head.nbytes:
        raise InputError(f"{source}: the header is cut off after {len(data)} bytes; the file is truncated")
    (seen,) = struct.unpack_from("<Q" if head.wide_seen else "<I", data, 12)
    return DarknetHeader(major, minor, revision, seen)


def read_weights(model: DarknetModel, path: str | Path) -> DarknetHeader:
    """Load a `.weights` file into `model` (all or nothing); returns its header."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"weights file {str(path)!r} not found; pass an existing darknet .weights file")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = read_header(f.read(20), str(path))
        payload = size - head.nbytes
        tensors = model.weight_tensors()
        need = sum(t.numel() for t in tensors)
        if payload % 4:
            raise InputError(
                f"{path}: {payload} payload bytes is not a whole number of float32 values; the file is damaged"
            )
        have = payload // 4
        if have != need:
            what = "truncated: it is short" if have < need else "too long: it has extra values"
            raise InputError(
                f"{path} holds {have} values after the header but {model.path} needs {need} ({what} by "
                f"{abs(have - need)}); the .weights file does not belong to this cfg or is damaged"
            )
        f.seek(head.nbytes)
        values = torch.empty(need, dtype=torch.float32)
        if f.readinto(memoryview(values.numpy()).cast("B")) != payload:
            raise InputError(f"{path}: could not read the {payload} payload bytes; the file changed while reading")
    transposed = {id(m.fc.weight) for m in model.layers if isinstance(m, Connected)} if head.transposed else set()
    new = []
    offset = 0
    for t in tensors:
        chunk = values[offset : offset + t.numel()]
        offset += t.numel()
        if id(t) in transposed:
            chunk = chunk.view(t.shape[1], t.shape[0]).t()
        new.append(chunk.reshape(t.shape))
    with torch.no_grad():
        for t, v in zip(tensors, new):
            t.copy_(v)
    return head


def write_weights(
    model: DarknetModel, path: str | Path, header: DarknetHeader | None = None, layers: int | None = None
) -> Path:
    """Write `model` as a darknet `.weights` file (atomically); `layers`: only the first N layers, as
    `darknet partial cfg weights out N` writes them (e.g. yolov4-tiny.conv.29)."""
    header = header or DarknetHeader()
    if header.transposed:
        raise InputError("writing transposed (major or minor > 1000) .weights files is not supported; use 0.2.0")
    if layers is not None and not 0 < layers <= len(model.layers):
        raise InputError(f"layers={layers}: the cfg has layers 0..{len(model.layers) - 1}; pass 1..{len(model.layers)}")

    def write(f) -> None:
        f.write(header.pack())
        for layer in model.layers[:layers]:
            for t in layer.weight_tensors():
                f.write(t.detach().to("cpu", torch.float32).contiguous().numpy().astype("<f4").tobytes())

    return atomic_write(path, write)


def random_weights(cfg: str | Path, path: str | Path, img: int = 64, seed: int = 0) -> tuple[DarknetModel, Path]:
    """A `.cfg` model with random weights in a well-conditioned regime, written as `.weights`: interop checks without
    a download.

    BN: random affine (beta in [1, 2], so most units sit in the activations' near-linear part), statistics from one
    random batch, then conv weights x10 and variances x100 (the same function; variances far above BN's eps, as in
    trained weights: OpenCV folds BN with another eps than darknet). Prediction convs x0.3 keep the box logits
    moderate. Deep random nets in a chaotic regime amplify fp32 rounding to 1e-3 in any two implementations; this
    regime keeps them comparable at 1e-5.
    """
    g = torch.Generator().manual_seed(seed)
    dk = DarknetModel.from_cfg(cfg)
    with torch.no_grad():
        for m in dk.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(1.0, 2.0, generator=g)
                m.momentum = 1.0
        dk.train()(torch.randn(4, 3, img, img, generator=g))
        for layer in dk.layers:
            if isinstance(layer, Conv) and isinstance(layer.bn, torch.nn.BatchNorm2d):
                layer.conv.weight.mul_(10)
                layer.bn.running_var.mul_(100)
                layer.bn.running_mean.mul_(10)
            elif isinstance(layer, Conv):
                layer.conv.weight.mul_(0.3)
    dk.eval()
    return dk, write_weights(dk, path)
