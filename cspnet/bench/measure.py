"""Measurement with the framework's tools: params, MACs (torch.utils.flop_counter), interleaved latency, peak
memory (torch.profiler)."""

from __future__ import annotations

import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

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


clock: Callable[[], float] = time.perf_counter  # the timer (tests inject a noisy one)
MAX_SPREAD = 1.5  # p75/p25 above this: the samples are too noisy for a ratio of medians to be a result


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
            t0 = clock()
            fn()
            sync()
            times[name].append(clock() - t0)
    return times


def summarize(samples: list[float]) -> dict[str, float]:
    """Median and spread (interquartile range) of latency samples, in milliseconds."""
    ms = sorted(s * 1e3 for s in samples)
    q = statistics.quantiles(ms, n=4) if len(ms) >= 2 else [ms[0]] * 3
    spread = q[2] / q[0] if q[0] > 0 else float("inf")
    return {"median_ms": statistics.median(ms), "p25_ms": q[0], "p75_ms": q[2], "min_ms": ms[0], "spread": spread}


def load_average() -> float | None:
    """The machine's 1-minute load average (None where the OS has none)."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def ratio_noise(a: dict, b: dict, max_spread: float = MAX_SPREAD) -> float | None:
    """The larger p75/p25 of two latency summaries when it is above max_spread (their ratio is then swamped by the
    noise and is no result), else None."""
    worst = max(a.get("spread", 1.0), b.get("spread", 1.0))
    return worst if worst > max_spread else None


def format_ratio(ratio: float, noise: float | None, spec: str = ".2f") -> str:
    """`0.84`, or `~1.00 (noisy: p75/p25 1.9)` when the noise swamps it."""
    return format(ratio, spec) if noise is None else f"~{ratio:{spec}} (noisy: p75/p25 {noise:.1f})"


def busy_threads(threads: int, explicit: bool = False) -> tuple[int, list[str]]:
    """(threads to use, warnings) for the current load: when the 1-min load average is above the thread count,
    other jobs hold the cores; use the free ones unless the user chose the count, and say so."""
    load, cpus = load_average(), os.cpu_count() or 1
    if load is None or load <= threads:
        return threads, []
    notes = [f"machine busy: 1-min load average {load:.1f} is above the {threads} thread(s) used, on {cpus} CPUs"]
    free = max(1, int(cpus - load + 0.5))
    if not explicit and free < threads:
        notes.append(f"using {free} thread(s) instead of {threads} (pass --threads to choose)")
        threads = free
    if os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE":
        notes.append(
            "set OMP_WAIT_POLICY=PASSIVE before starting: spin-waiting OpenMP threads inflate latencies when cores are shared"
        )
    return threads, notes


# what the profiler's C++ side (kineto) prints on every start/stop on a CPU machine; not errors of the user's
PROFILER_NOISE = re.compile(r"USDT:|profiler_start|profiler_stop|gpuGetDeviceCount|cudaGetDeviceCount")


@contextmanager
def quiet_profiler_logs() -> Iterator[None]:
    """Hold back kineto's log lines (written to file descriptor 2 by C++, so Python cannot filter them) and pass
    any other stderr output of the block through."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to filter
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [ln for ln in tmp.read().decode(errors="replace").splitlines() if not PROFILER_NOISE.search(ln)]
            if kept:
                print("\n".join(kept), file=sys.stderr)


def profile_peak_memory(fn: Callable[[], object]) -> int:
    """Peak live bytes of tensors allocated inside `fn`, from torch.profiler's memory timeline."""
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import Action

    os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # no "ERROR: gpuGetDeviceCount failed" on machines without CUDA
    with quiet_profiler_logs():
        with profile(
            activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True
        ) as prof:
            fn()
    cur = peak = 0
    for _, action, _, size in prof._memory_profile().timeline:
        if action == Action.CREATE:
            cur += size
        elif action == Action.DESTROY:
            cur -= size
        peak = max(peak, cur)
    return peak
