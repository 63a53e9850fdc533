"""The metric protocol: `reset()`, `update(preds, batch)` per batch, `compute()` once, the same on every rank.

Two bases cover the two ways to measure over processes:
- `SumMetric`: additive statistics (counts, sums, a confusion matrix) summed over batches, then all-reduced.
- `GatherMetric`: keep every prediction as plain records, gather them from every rank, evaluate once on rank 0
  (e.g. COCOeval), broadcast the result.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from cspnet.engine import dist
from cspnet.errors import CspnetError


class Metric(Protocol):
    """What the engine calls: reset() before a pass, update() per batch, compute() once after (on every rank)."""

    def reset(self) -> None: ...

    def update(self, preds: Any, batch: dict) -> None: ...

    def compute(self) -> dict[str, float]: ...


class SumMetric:
    """Additive statistics: subclasses return per-batch sums from `stats` and turn the totals into values."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}

    def add(self, stats: dict[str, torch.Tensor | float]) -> None:
        for k, v in stats.items():
            v = torch.as_tensor(v).detach().to("cpu", torch.float64)
            self.sums[k] = self.sums[k] + v if k in self.sums else v

    def update(self, preds: Any, batch: dict) -> None:
        self.add(self.stats(preds, batch))

    def stats(self, preds: Any, batch: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def summarize(self, sums: dict[str, torch.Tensor]) -> dict[str, float]:
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        return self.summarize(dist.reduce_sums(self.sums))


class GatherMetric:
    """Every prediction kept: `records` turns a batch into picklable records (e.g. COCO result dicts); `compute`
    gathers them from every rank, calls `evaluate(records)` once on rank 0 and broadcasts its values."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.kept: list = []

    def update(self, preds: Any, batch: dict) -> None:
        self.kept.extend(self.records(preds, batch))

    def records(self, preds: Any, batch: dict) -> list:
        raise NotImplementedError

    def evaluate(self, records: list) -> dict[str, float]:
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        parts = dist.gather_to_main(self.kept)
        result: tuple[bool, Any] = (True, None)
        error = None
        if parts is not None:  # rank 0
            try:
                result = (True, self.evaluate([r for part in parts for r in part]))
            except Exception as e:  # the other ranks wait in broadcast: send them the error, not a hang
                error, result = e, (False, f"{type(e).__name__}: {e}")
        ok, value = dist.broadcast(result)
        if error is not None:
            raise error
        if not ok:
            raise CspnetError(f"evaluation failed on rank 0 ({value})")
        return value
