"""torch.distributed helpers that are no-ops in a single process: rank, world, sum-reduce, gather, broadcast."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else int(os.environ.get("WORLD_SIZE", 1))


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", 0))


def is_main() -> bool:
    return rank() == 0


def setup(device: str = "auto") -> torch.device:
    """The device this process trains on; under torchrun also the process group (nccl on CUDA, gloo on the CPU)."""
    from cspnet.errors import ConfigError

    name = device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device cuda requested but CUDA is not available; use --device cpu")
    world = int(os.environ.get("WORLD_SIZE", 1))
    if name == "cuda" and world > 1:
        name = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    dev = torch.device(name)
    if dev.type == "cuda":
        if dev.index is None:  # set_device needs an index
            dev = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return dev


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _comm_device() -> torch.device:
    """nccl reduces CUDA tensors only; gloo CPU tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def reduce_sums(sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Sum tensors over ranks (all_reduce). A key missing on a rank (it saw no batch) counts as zeros there."""
    if not _active():
        return sums
    shapes: dict[str, tuple] = {}
    for part in gather_all({k: tuple(v.shape) for k, v in sums.items()}):
        shapes.update(part)
    dev = _comm_device()
    out = {}
    for k in sorted(shapes):  # the same order on every rank
        v = sums[k].to(dev, torch.float64) if k in sums else torch.zeros(shapes[k], dtype=torch.float64, device=dev)
        dist.all_reduce(v)
        out[k] = v.cpu()
    return out


def any_rank(flag: bool, device: torch.device | None = None) -> bool:
    """True on every rank when it is True on at least one (all_reduce MAX)."""
    if not _active():
        return flag
    t = torch.tensor([float(flag)], device=device or _comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather_all(obj: Any) -> list[Any]:
    """Every rank's object, on every rank (all_gather_object)."""
    if not _active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def gather_to_main(obj: Any) -> list[Any] | None:
    """Every rank's object on rank 0 (gather_object); None on the other ranks."""
    if not _active():
        return [obj]
    out: list[Any] | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def broadcast(obj: Any) -> Any:
    """Rank 0's object on every rank (broadcast_object_list)."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
