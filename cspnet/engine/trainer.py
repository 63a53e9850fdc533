"""The one training loop. A Task says what to train (model, data, loss, metric); the Trainer says how.

Optimizer (task param groups; by default no weight decay on norms and biases), warm-up then cosine, autocast (bf16
on CPU, fp16/bf16 on CUDA), EMA (AveragedModel), gradient accumulation, channels_last, seeds and deterministic
mode, DDP under torchrun, atomic checkpoints with exact resume, a NaN guard, and Ctrl-C saving last.pt.
`evaluate()` is the validation pass on its own: `val` commands call it without building a Trainer.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import math
import os
import random
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from cspnet.engine import dist as edist
from cspnet.engine.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from cspnet.engine.metrics import Metric, SumMetric
from cspnet.engine.task import Task, default_param_groups
from cspnet.errors import ConfigError, CspnetError, InputError
from cspnet.io import atomic_write

if TYPE_CHECKING:
    from cspnet.engine.run import RunDir

param_groups = default_param_groups  # the default of Task.param_groups


class NonFiniteLossError(CspnetError):
    """The loss became NaN or inf; the run stopped and last.pt keeps the last good state."""


@dataclass
class TrainCfg:
    """How to train; saved as args.yaml and in every checkpoint."""

    epochs: int = 10
    batch: int = 64  # total over all processes
    lr: float = 0.1
    optimizer: str = "sgd"  # sgd | adamw
    momentum: float = 0.9
    weight_decay: float = 5e-5
    warmup_epochs: float = 1.0
    min_lr: float = 0.01  # final lr as a fraction of lr
    cooldown_epochs: int = 0  # last epochs held at min_lr after the cosine (timm's cooldown), so top-1 can settle
    amp: str = "auto"  # auto (fp16 on CUDA, off on CPU) | off | bf16 | fp16
    ema: bool = True
    ema_decay: float = 0.9998
    accumulate: int = 1
    channels_last: bool = False
    seed: int = 0
    deterministic: bool = False
    workers: int = 2
    device: str = "auto"
    sync_bn: bool = False
    save_dir: str = "runs/classify/exp"


def lr_factor(step: int, warmup: int, total: int, min_lr: float) -> float:
    """Linear warm-up for `warmup` steps, then cosine from 1 down to min_lr at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr + (1 - min_lr) * 0.5 * (1 + math.cos(math.pi * t))


def ema_fn(decay: float) -> Callable:
    """EMA with a warm-up, min(decay, (1 + n) / (10 + n)), so short runs are not dominated by the initial weights."""

    def update(ema_params, params, num_averaged) -> None:
        n = int(num_averaged)
        get_ema_multi_avg_fn(min(decay, (1 + n) / (10 + n)))(ema_params, params, num_averaged)

    return update


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for --amp on this device (None: full precision)."""
    if amp not in ("auto", "off", "bf16", "fp16"):
        raise ConfigError(f"unknown amp mode {amp!r}; use auto, off, bf16 or fp16")
    if amp == "auto":
        amp = "fp16" if device.type == "cuda" else "off"
    if amp == "fp16" and device.type == "cpu":
        raise ConfigError("fp16 autocast needs CUDA; on the CPU use --amp bf16 or --amp off")
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


class ResumableSampler(DistributedSampler):
    """DistributedSampler (also for a single process) that can start part-way into an epoch, for resume."""

    start = 0

    def __iter__(self):
        return itertools.islice(super().__iter__(), self.start, None)

    def __len__(self) -> int:
        return self.num_samples - self.start


class ShardSampler(Sampler):
    """Every `world`-th index, without padding, so metrics summed over ranks count each sample once."""

    def __init__(self, n: int, rank: int, world: int):
        self.indices = list(range(rank, n, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False


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


def _no_images(what: str, loader: DataLoader) -> InputError:
    where = getattr(loader.dataset, "where", "the dataset")
    return InputError(f"no readable {what} images in {where}: every image failed to load")


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
    Under DDP every rank passes its shard of the data (ShardSampler) and gets the same values back.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
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
            loss, items = task.loss(preds, batch) if task.val_loss else (None, None)
        meter.count(n, loss, items, batch.get("skipped", 0))
        if metric is not None:
            metric.update(preds, batch)
    counts = meter.compute()
    if counts["n"] == 0:
        raise _no_images("validation", loader)
    out = {k: v for k, v in counts.items() if k not in ("n", "skipped")}
    if metric is not None:
        out.update(metric.compute())
    out["skipped"] = int(counts["skipped"])
    return out


def check_readable(ds: Dataset, what: str, probe: int = 16) -> None:
    """Fail before training when a split's images cannot be read: decode up to `probe` spread-out samples."""
    n = len(ds)
    idx = range(n) if n <= probe else sorted({i * (n - 1) // (probe - 1) for i in range(probe)})
    if n and all(ds[i] is None for i in idx):
        where = getattr(ds, "where", what)
        some = "every image" if n <= probe else f"all {len(idx)} sampled images"
        raise InputError(f"{some} of the {what} split {where} failed to load (see the warnings); check the files")


class Trainer:
    """Trains a Task with a TrainCfg; `fit()` runs to the end and returns the last epoch's metrics."""

    def __init__(self, task: Task, cfg: TrainCfg, run: RunDir | None = None):
        self.task, self.cfg, self.run = task, cfg, run
        self.args = {**dataclasses.asdict(task.cfg), **dataclasses.asdict(cfg)}  # args.yaml; resume rebuilds from it
        self.world = edist.world_size()
        self.rank = edist.rank()
        self.main = self.rank == 0
        self.save_dir = Path(cfg.save_dir)
        self.wdir = self.save_dir / "weights"
        self.saved: list[str] = []  # files this process wrote (only rank 0 writes)
        self.metrics: dict[str, float] = {}
        self.writer = None
        self.epoch = 0
        self._check_cfg()

    def _check_cfg(self) -> None:
        c = self.cfg
        if c.optimizer not in ("sgd", "adamw"):
            raise ConfigError(f"unknown optimizer {c.optimizer!r}; use sgd or adamw")
        if c.amp not in ("auto", "off", "bf16", "fp16"):
            raise ConfigError(f"unknown amp mode {c.amp!r}; use auto, off, bf16 or fp16")
        if c.epochs < 1 or c.accumulate < 1 or c.batch < 1:
            raise ConfigError("epochs, batch and accumulate must be at least 1")
        if c.batch % self.world:
            raise ConfigError(f"batch {c.batch} does not split over {self.world} processes; use a multiple of it")

    # ---- set-up -------------------------------------------------------------------------------------------------
    def _setup_device(self) -> None:
        self.device = edist.setup(self.cfg.device)
        self.amp_dtype = amp_dtype(self.cfg.amp, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

    def _setup(self) -> None:
        c = self.cfg
        self._setup_device()
        train_ds, val_ds = self.task.datasets()
        if len(train_ds) < c.batch:
            raise ConfigError(f"batch {c.batch} is larger than the {len(train_ds)} training images; lower --batch")
        check_readable(train_ds, "training")  # before seeding: the probe's augmentations draw random numbers
        check_readable(val_ds, "validation")
        seed_everything(c.seed, c.deterministic)
        model = self.task.build_model()
        if c.sync_bn and self.device.type != "cuda":
            raise ConfigError("SyncBatchNorm works on CUDA only; drop --sync-bn for CPU (gloo) runs")
        if c.sync_bn and self.world > 1:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model.to(self.device, memory_format=torch.channels_last if c.channels_last else None)
        self.ema = AveragedModel(self.model, multi_avg_fn=ema_fn(c.ema_decay), use_buffers=True) if c.ema else None
        self.train_model: nn.Module = self.model
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        torch.manual_seed(c.seed + self.rank)  # same init on every rank, different augmentation

        per_rank = c.batch // self.world
        self.train_sampler = ResumableSampler(train_ds, self.world, self.rank, shuffle=True, seed=c.seed)
        loader_kw = dict(num_workers=c.workers, pin_memory=self.device.type == "cuda")
        self.train_loader = DataLoader(
            train_ds,
            per_rank,
            sampler=self.train_sampler,
            drop_last=True,
            collate_fn=self.task.collate(True),
            **loader_kw,
        )
        self.val_loader = DataLoader(
            val_ds,
            per_rank,
            sampler=ShardSampler(len(val_ds), self.rank, self.world),
            collate_fn=self.task.collate(False),
            **loader_kw,
        )
        self.steps_per_epoch = math.ceil(len(self.train_loader) / c.accumulate)

        opt_cls = torch.optim.SGD if c.optimizer == "sgd" else torch.optim.AdamW
        extra = dict(momentum=c.momentum, nesterov=True) if c.optimizer == "sgd" else {}
        self.optimizer = opt_cls(self.task.param_groups(self.model, c.weight_decay), lr=c.lr, **extra)
        if not 0 <= c.cooldown_epochs < c.epochs:
            raise ConfigError(
                f"cooldown_epochs {c.cooldown_epochs} must be at least 0 and below epochs {c.epochs}; "
                "lower --cooldown-epochs or raise --epochs"
            )
        warmup = round(c.warmup_epochs * self.steps_per_epoch)
        total = (c.epochs - c.cooldown_epochs) * self.steps_per_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, warmup, total, c.min_lr)
        )
        self.start_epoch, self.start_batch, self.best = 0, 0, -math.inf

    # ---- checkpoints --------------------------------------------------------------------------------------------
    def state(self, epoch: int, batch: int = 0, full: bool = True) -> dict:
        """A plain checkpoint dict. epoch = epochs completed; batch = batches done in the next one (Ctrl-C)."""
        ckpt = {
            "task": self.task.name,
            "meta": self.task.meta(),
            "args": self.args,
            "epoch": epoch,
            "batch": batch,
            "best_fitness": self.best,
            "metrics": dict(self.metrics),
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "model_ema": {k: v.detach().cpu() for k, v in self.ema.module.state_dict().items()} if self.ema else None,
            "ema_updates": int(self.ema.n_averaged) if self.ema else 0,
        }
        if full:
            ckpt.update(
                optimizer=self.optimizer.state_dict(),
                scheduler=self.scheduler.state_dict(),
                scaler=self.scaler.state_dict(),
                rng=rng_state(),
            )
        return ckpt

    def save(self, name: str, **kw) -> None:
        if self.main:
            self.saved.append(str(save_checkpoint(self.state(**kw), self.wdir / name)))

    def load(self, path: str | Path) -> None:
        """Restore everything for an exact resume: model, EMA, optimizer, scheduler, scaler, epoch, RNG."""
        ckpt = load_checkpoint(path)
        if ckpt.get("task") != self.task.name:
            raise InputError(
                f"{path} is a {ckpt.get('task')!r} checkpoint, not {self.task.name!r}; pass its own last.pt"
            )
        saved, now = ckpt.get("meta") or {}, self.task.meta()
        if saved != now:
            diff = [k for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
            k = diff[0]
            raise InputError(
                f"{path} does not fit this run: {', '.join(diff)} differ ({k}: checkpoint {_short(saved.get(k))}, "
                f"now {_short(now.get(k))}); resume with the same model and data"
            )
        if "optimizer" not in ckpt:
            raise InputError(f"{path} holds weights only (best.pt); resume from last.pt")
        self.model.load_state_dict(ckpt["model"])
        if self.ema:
            self.ema.module.load_state_dict(ckpt["model_ema"])
            self.ema.n_averaged.fill_(ckpt["ema_updates"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        self.start_epoch, self.start_batch, self.best = ckpt["epoch"], ckpt["batch"], ckpt["best_fitness"]
        self.metrics = ckpt.get("metrics", {})

    # ---- the loop -----------------------------------------------------------------------------------------------
    def train_epoch(self) -> dict[str, float]:
        """One training pass (from self.start_batch on resume); the loss, its items and the train metric."""
        c, task, model, loader = self.cfg, self.task, self.train_model, self.train_loader
        model.train()
        metric = task.metric(True)
        if metric is not None:
            metric.reset()
        meter = LossMeter()
        seen, t0 = 0, time.perf_counter()
        desc = f"{self.epoch + 1}/{c.epochs}"
        bar = tqdm(loader, desc=desc, disable=not self.main, leave=False, mininterval=1.0, dynamic_ncols=True)
        last = len(loader) + self.start_batch
        for i, batch in enumerate(bar, start=self.start_batch):
            n = len(batch["images"])
            if edist.any_rank(n == 0, self.device):  # a rank has nothing to train on: all skip, DDP stays in step
                meter.count(0, skipped=batch.get("skipped", 0) + n)
                continue
            batch = task.preprocess(to_device(batch, self.device, c.channels_last), True)
            step = (i + 1) % c.accumulate == 0 or i + 1 == last
            sync = nullcontext() if step or self.world == 1 else model.no_sync()
            with sync:
                with torch.autocast(self.device.type, self.amp_dtype, enabled=self.amp_dtype is not None):
                    preds = task.forward(model, batch, True)
                    loss, items = task.loss(preds, batch)
                self._check_finite(loss, i)
                self.scaler.scale(loss / c.accumulate).backward()
            if step:
                self._step()
            meter.count(n, loss, items, batch.get("skipped", 0))
            if metric is not None:
                metric.update(preds, batch)
            seen += n
            self._batch = i + 1
            if self.main:
                ips = seen * self.world / (time.perf_counter() - t0)
                lr = self.optimizer.param_groups[0]["lr"]
                bar.set_postfix(
                    {k: f"{v:.3g}" for k, v in meter.running().items()} | {"lr": f"{lr:.3g}", "img/s": f"{ips:.0f}"}
                )
        elapsed = time.perf_counter() - t0
        counts = meter.compute()
        if counts["n"] == 0:
            raise _no_images("training", loader)
        out = {k: v for k, v in counts.items() if k not in ("n", "skipped")}
        if metric is not None:
            out.update(metric.compute())
        out["skipped"] = int(counts["skipped"])
        out["img_s"] = seen * self.world / elapsed
        return out

    def validate(self) -> dict[str, float]:
        """The validation pass on the EMA model (or the model)."""
        model = self.ema.module if self.ema else self.model
        return evaluate(
            model,
            self.val_loader,
            self.task,
            device=self.device,
            amp=self.amp_dtype,
            channels_last=self.cfg.channels_last,
            progress=self.main,
        )

    def _check_finite(self, loss: torch.Tensor, i: int) -> None:
        if edist.any_rank(not bool(torch.isfinite(loss.detach()).all()), self.device):
            kept = f"epoch {self.epoch}" if self.epoch else "no checkpoint (failed in the first epoch)"
            raise NonFiniteLossError(
                f"loss is {loss.item()} at epoch {self.epoch + 1}, batch {i + 1}; stopped, last.pt keeps {kept}; "
                "lower --lr, or use --amp off"
            )

    def _step(self) -> None:
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if self.ema:
            self.ema.update_parameters(self.model)

    def fit(self, resume: str | Path | None = None) -> dict[str, float]:
        """Train from scratch, or resume from a last.pt exactly where it stopped."""
        ok = False
        try:
            self._setup()
            if resume:
                self.load(resume)
            log = self._start_logging(resumed=bool(resume))
            self._loop(log)
            ok = True
        finally:
            self._finish(ok)
        return self.metrics

    def _loop(self, log: Callable[[dict], None]) -> None:
        self.epoch = self.start_epoch
        try:
            for epoch in range(self.start_epoch, self.cfg.epochs):
                self.epoch = epoch
                self._batch = self.start_batch
                self.task.on_epoch_start(self, epoch)
                self.train_sampler.set_epoch(epoch)
                self.train_sampler.start = self.start_batch * (self.cfg.batch // self.world)
                lr = self.optimizer.param_groups[0]["lr"]
                train = self.train_epoch()
                self.start_batch, self._batch = 0, -1  # -1: this epoch's training is done
                val = self.validate()
                self.metrics = {
                    "epoch": epoch + 1,
                    **{f"train/{k}": v for k, v in train.items() if k not in ("img_s", "skipped")},
                    **{f"val/{k}": v for k, v in val.items() if k != "skipped"},
                    "lr": lr,
                    "img_s": train["img_s"],
                    "skipped": train["skipped"] + val["skipped"],
                }
                log(self.metrics)
                self.task.on_epoch_end(self, epoch, self.metrics)
                if self.task.fitness not in self.metrics:
                    raise ConfigError(
                        f"task {self.task.name!r} picks best.pt by {self.task.fitness!r}, which it does not log; "
                        f"logged: {', '.join(k for k in self.metrics if '/' in k)}"
                    )
                fitness = self.metrics[self.task.fitness]
                if fitness > self.best:
                    self.best = fitness
                    self.save("best.pt", epoch=epoch + 1, full=False)
                self.save("last.pt", epoch=epoch + 1)
        except KeyboardInterrupt:  # interrupted in validation: keep the trained epoch, skip its metrics row
            done = self._batch == -1
            self.save("last.pt", epoch=self.epoch + done, batch=0 if done else self._batch)
            if self.main:
                print(f"interrupted: saved {self.wdir / 'last.pt'}; continue with --resume")
            raise

    # ---- logging ------------------------------------------------------------------------------------------------
    def _start_logging(self, resumed: bool) -> Callable[[dict], None]:
        """args.yaml, results.csv (one row an epoch) and TensorBoard, on rank 0; returns the per-epoch logger."""
        self.writer = None
        if not self.main:
            return lambda m: None
        from torch.utils.tensorboard import SummaryWriter

        self.save_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.save_dir / "args.yaml", lambda f: f.write(yaml.safe_dump(self.args, sort_keys=False)), "w")
        csv_path = self.save_dir / "results.csv"
        if resumed and csv_path.exists():  # drop rows after the checkpoint (killed between csv and checkpoint)
            rows = [r for r in csv.DictReader(csv_path.open()) if int(r["epoch"]) <= self.start_epoch]
            _write_csv(csv_path, rows)
        elif csv_path.exists():
            csv_path.unlink()
        self.writer = SummaryWriter(str(self.save_dir))

        def log(m: dict) -> None:
            rows = list(csv.DictReader(csv_path.open())) if csv_path.exists() else []
            _write_csv(csv_path, [*rows, m])
            for k, v in m.items():
                if k != "epoch":
                    self.writer.add_scalar(k, v, m["epoch"])
            self.writer.flush()
            shown = ("train/loss", "val/loss", self.task.fitness, "lr", "img_s")
            print(
                f"epoch {m['epoch']}/{self.cfg.epochs} " + " ".join(f"{k}={m[k]:.4g}" for k in shown if k in m),
                flush=True,
            )

        return log

    def _finish(self, ok: bool) -> None:
        if self.main and self.writer is not None:
            self.writer.close()
            from cspnet.engine.plots import plot_results

            if (self.save_dir / "results.csv").exists():
                plot_results(self.save_dir / "results.csv")
        if self.run is not None:  # a fresh run folder that never got a checkpoint is removed, so the name is free
            self.run.release(keep=ok or bool(self.saved))
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _short(v: Any, n: int = 60) -> str:
    r = repr(v)
    return r if len(r) <= n else r[: n - 3] + "..."


def _write_csv(path: Path, rows: list[dict]) -> None:
    def write(f) -> None:
        if rows:
            w = csv.DictWriter(f, fieldnames=list(rows[-1]))
            w.writeheader()
            w.writerows(rows)

    atomic_write(path, write, mode="w")
