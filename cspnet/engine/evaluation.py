"""The validation pass on its own (`evaluate`; `val` commands call it without a Trainer), and what the training pass
shares with it: batches moved to the device, the loss meter, and the check that a split's images can be read."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from cspnet.engine.metrics import Metric, SumMetric
from cspnet.engine.task import Task
from cspnet.errors import InputError


class LossMeter(SumMetric):
    """Images seen and skipped, and the loss and its items averaged per image; summed over ranks."""

    def count(self, n: int, loss: torch.Tensor | None = None, items: dict | None = None, skipped: int = 0) -> None:
        stats: dict[str, Any] = {"n": float(n), "skipped": float(skipped)}
        if loss is not None:
            stats["loss"] = loss.detach().double() * n
            stats.update({f"item/{k}": v.detach().double() * n for k, v in (items or {}).items()})
        self.add(stats)

    def summarize(self, sums: dict[str, torch.Tensor]) -> dict[str, float]:
        n = float(sums.get("n", 0.0))
        out = {"n": n, "skipped": float(sums.get("skipped", 0.0))}
        for k, v in sums.items():
            if k == "loss" or k.startswith("item/"):
                out[k.removeprefix("item/")] = float(v) / max(n, 1.0)
        return out

    def running(self) -> dict[str, float]:
        """This rank's means so far, for the progress bar (no communication)."""
        return {k: v for k, v in self.summarize(self.sums).items() if k not in ("n", "skipped")}


def to_device(batch: dict, device: torch.device, channels_last: bool = False) -> dict:
    """The batch's tensors on the device (images channels_last on request); other entries as they are."""
    out = {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    if channels_last:
        out["images"] = out["images"].contiguous(memory_format=torch.channels_last)
    return out


def pass_results(meter: LossMeter, metric: Metric | None, what: str, loader: DataLoader) -> dict[str, float]:
    """The end of a pass over `loader`: mean loss and items, the metric's values, and "skipped" (unreadable images)."""
    counts = meter.compute()
    if counts["n"] == 0:
        where = getattr(loader.dataset, "where", "the dataset")
        raise InputError(f"no readable {what} images in {where}: every image failed to load")
    out = {k: v for k, v in counts.items() if k not in ("n", "skipped")}
    if metric is not None:
        out.update(metric.compute())
    out["skipped"] = int(counts["skipped"])
    return out


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    task: Task,
    metric: Metric | None = None,
    *,
    device: torch.device | str | None = None,
    amp: torch.dtype | None = None,
    channels_last: bool = False,
    progress: bool = True,
    desc: str = "val",
) -> dict[str, float]:
    """One validation pass: the task's metric (default `task.metric(False)`) and mean loss, reduced over ranks.

    Returns the metric's values, "loss" and the loss items (when task.val_loss), and "skipped" (unreadable images).
    Under DDP every rank passes its shard of the data (samplers.ShardSampler) and gets the same values back.
    """
    if device is None:
        device = next(model.parameters()).device if isinstance(model, nn.Module) else "cpu"  # exported: CPU runtimes
    device = torch.device(device)
    model = model.to(device).eval()
    metric = metric if metric is not None else task.metric(False)
    if metric is not None:
        metric.reset()
    meter = LossMeter()
    bar = tqdm(loader, desc=desc, disable=not progress, leave=False, mininterval=1.0, dynamic_ncols=True)
    for batch in bar:
        n = len(batch["images"])
        if n == 0:  # every image failed to load (already warned)
            meter.count(0, skipped=batch.get("skipped", 0))
            continue
        batch = task.preprocess(to_device(batch, device, channels_last), False)
        with torch.autocast(device.type, amp, enabled=amp is not None):
            preds = task.forward(model, batch, False)
            with_loss = task.val_loss and not (isinstance(preds, dict) and preds.get("no_loss"))
            loss, items = task.loss(preds, batch) if with_loss else (None, None)
        meter.count(n, loss, items, batch.get("skipped", 0))
        if metric is not None:
            metric.update(preds, batch)
    return pass_results(meter, metric, "validation", loader)


def check_readable(ds: Dataset, what: str, probe: int = 16) -> None:
    """Fail before training when a split's images cannot be read: decode up to `probe` spread-out samples."""
    n = len(ds)
    idx = range(n) if n <= probe else sorted({i * (n - 1) // (probe - 1) for i in range(probe)})
    if n and all(ds[i] is None for i in idx):
        where = getattr(ds, "where", what)
        some = "every image" if n <= probe else f"all {len(idx)} sampled images"
        raise InputError(f"{some} of the {what} split {where} failed to load (see the warnings); check the files")
