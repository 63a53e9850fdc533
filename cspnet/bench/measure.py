"""Measurement with the framework's tools: params, MACs (torch.utils.flop_counter), interleaved latency."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    """Number of parameters (as PyTorch and timm count them)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(
    model: nn.Module, img_size: int | tuple[int, int] = 224, batch: int = 1, in_chans: int | None = None
) -> int:
    """Multiply-accumulates of one forward pass, by FlopCounterMode (FLOPs / 2), per batch."""
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    in_chans = in_chans or getattr(model, "in_chans", 3)
    p = next(model.parameters(), None)
    x = torch.zeros(batch, in_chans, h, w, **({"device": p.device, "dtype": p.dtype} if p is not None else {}))
    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return counter.get_total_flops() // 2


def time_interleaved(
    fns: dict[str, Callable[[], object]], runs: int = 20, warmup: int = 3, rotate: bool = False
) -> dict[str, list[float]]:
    """Time each callable `runs` times, interleaved A B A B ..., so machine noise hits all alike. Seconds.

    rotate: start each round one place later (A B C, B C A, ...) so no callable always follows the same one.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    items = list(fns.items())
    for i in range(runs):
        k = i % len(items) if rotate else 0
        for name, fn in items[k:] + items[:k]:
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    return times


def summarize(samples: list[float]) -> dict[str, float]:
    """Median and spread (interquartile range) of latency samples, in milliseconds."""
    ms = sorted(s * 1e3 for s in samples)
    q = statistics.quantiles(ms, n=4) if len(ms) >= 2 else [ms[0]] * 3
    return {"median_ms": statistics.median(ms), "p25_ms": q[0], "p75_ms": q[2], "min_ms": ms[0]}
