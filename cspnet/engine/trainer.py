"""The one training loop. A Task says what to train (model, data, loss, metric); the Trainer says how.

The loop: optimizer over the task's param groups, warm-up then cosine (optim.py), autocast (amp.py), EMA, gradient
accumulation, channels_last, seeds and deterministic mode (rng.py), DDP under torchrun, atomic checkpoints with exact
resume (samplers.py starts mid-epoch), a NaN guard, and Ctrl-C saving last.pt. The validation pass is
evaluation.evaluate; args.yaml, results.csv, TensorBoard and plots are run_log.RunLog.
"""

from __future__ import annotations

import dataclasses
import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from cspnet.engine import dist as edist
from cspnet.engine.amp import amp_dtype, check_amp
from cspnet.engine.checkpoint import load_checkpoint, save_checkpoint
from cspnet.engine.config import OPTIMIZERS, TrainCfg, flat_values
from cspnet.engine.evaluation import LossMeter, check_readable, evaluate, pass_results, to_device
from cspnet.engine.optim import build_ema, build_optimizer, build_scheduler
from cspnet.engine.rng import rng_state, seed_everything, set_rng_state
from cspnet.engine.run_log import RunLog
from cspnet.engine.samplers import ResumableSampler, ShardSampler
from cspnet.engine.task import Task
from cspnet.errors import ConfigError, CspnetError, InputError

if TYPE_CHECKING:
    from cspnet.engine.run import RunDir

__all__ = ["NonFiniteLossError", "TrainCfg", "Trainer", "evaluate"]


class NonFiniteLossError(CspnetError):
    """The loss became NaN or inf; the run stopped and last.pt keeps the last good state."""


class Trainer:
    """Trains a Task with a TrainCfg; `fit()` runs to the end and returns the last epoch's metrics."""

    def __init__(self, task: Task, cfg: TrainCfg, run: RunDir | None = None):
        self.task, self.cfg, self.run = task, cfg, run
        self.args = {**flat_values(task.cfg), **dataclasses.asdict(cfg)}  # args.yaml; resume rebuilds from it
        self.world = edist.world_size()
        self.rank = edist.rank()
        self.main = self.rank == 0
        self.save_dir = Path(cfg.save_dir)
        self.wdir = self.save_dir / "weights"
        self.saved: list[str] = []  # files this process wrote (only rank 0 writes)
        self.metrics: dict[str, float] = {}
        self.log: RunLog | None = None  # rank 0 only
        self.epoch = 0
        self._check_cfg()

    def _check_cfg(self) -> None:
        c = self.cfg
        if c.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {c.optimizer!r}; use {' or '.join(OPTIMIZERS)}")
        check_amp(c.amp)
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
        self.ema = build_ema(self.model, c)
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

        self.optimizer = build_optimizer(self.task.param_groups(self.model, c.weight_decay), c)
        self.scheduler = build_scheduler(self.optimizer, c, self.steps_per_epoch)
        self.start_epoch, self.start_batch, self.best = 0, 0, -math.inf
        self.stop = False  # a hook may set it (early stopping): the run ends after this epoch's checkpoints

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
        out = pass_results(meter, metric, "training", loader)
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
            if self.main:
                shown = ("train/loss", "val/loss", self.task.fitness, "lr", "img_s")
                self.log = RunLog(self.save_dir, self.args, self.cfg.epochs, shown)
                self.log.start(resumed=bool(resume), start_epoch=self.start_epoch)
            self._loop()
            ok = True
        finally:
            self._finish(ok)
        return self.metrics

    def _loop(self) -> None:
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
                if self.log is not None:
                    self.log(self.metrics)
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
                if self.stop:
                    break
        except KeyboardInterrupt:  # interrupted in validation: keep the trained epoch, skip its metrics row
            done = self._batch == -1
            self.save("last.pt", epoch=self.epoch + done, batch=0 if done else self._batch)
            if self.main:
                print(f"interrupted: saved {self.wdir / 'last.pt'}; continue with --resume")
            raise

    def _finish(self, ok: bool) -> None:
        if self.log is not None:
            self.log.close()
        if self.run is not None:  # a fresh run folder that never got a checkpoint is removed, so the name is free
            self.run.release(keep=ok or bool(self.saved))
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _short(v: Any, n: int = 60) -> str:
    r = repr(v)
    return r if len(r) <= n else r[: n - 3] + "..."
