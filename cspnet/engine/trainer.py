"""The one training loop. A Task says what to train (model, data, loss, metrics); the Trainer says how.

Optimizer (no weight decay on norms and biases), warm-up then cosine, autocast (bf16 on CPU, fp16/bf16 on CUDA),
EMA (AveragedModel), gradient accumulation, channels_last, seeds and deterministic mode, DDP under torchrun with
metrics reduced across ranks, atomic checkpoints with exact resume, a NaN guard, and Ctrl-C saving last.pt.
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
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from cspnet.engine.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from cspnet.errors import ConfigError, CspnetError, InputError
from cspnet.io import atomic_write

Stats = dict[str, torch.Tensor]  # per-batch sums (loss * n, n, correct, ...), summed over batches and ranks


class NonFiniteLossError(CspnetError):
    """The loss became NaN or inf; the run stopped and last.pt keeps the last good state."""


class Task(Protocol):
    """What a task (classify, detect, ...) plugs into the Trainer."""

    name: str
    fitness: str  # the metric (higher is better) that picks best.pt, e.g. "val/top1"
    cfg: Any  # a dataclass of the task's settings (model, data, ...); saved with the run's args

    def build_model(self) -> nn.Module: ...

    def datasets(self) -> tuple[Dataset, Dataset]: ...  # train, val

    def collate(self, train: bool) -> Callable: ...  # batches are dicts with "images" and optionally "skipped"

    def forward(self, model: nn.Module, batch: dict, train: bool) -> tuple[torch.Tensor, Stats]: ...  # loss, sums

    def summarize(self, sums: Stats) -> dict[str, float]: ...  # sums -> metrics (scalars first)

    def meta(self) -> dict: ...  # plain dict saved in checkpoints to rebuild the model (name, classes, ...)


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


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weights of convs and linears only: none on norm parameters and biases."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def ema_fn(decay: float) -> Callable:
    """EMA with a warm-up, min(decay, (1 + n) / (10 + n)), so short runs are not dominated by the initial weights."""

    def update(ema_params, params, num_averaged) -> None:
        n = int(num_averaged)
        get_ema_multi_avg_fn(min(decay, (1 + n) / (10 + n)))(ema_params, params, num_averaged)

    return update


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


class Trainer:
    """Trains a Task with a TrainCfg; `fit()` runs to the end and returns the last epoch's metrics."""

    def __init__(self, task: Task, cfg: TrainCfg):
        self.task, self.cfg = task, cfg
        self.args = {**dataclasses.asdict(task.cfg), **dataclasses.asdict(cfg)}  # args.yaml; resume rebuilds from it
        self.world = int(os.environ.get("WORLD_SIZE", 1))
        self.rank = int(os.environ.get("RANK", 0))
        self.main = self.rank == 0
        self.save_dir = Path(cfg.save_dir)
        self.wdir = self.save_dir / "weights"
        self.saved: list[str] = []  # files this process wrote (only rank 0 writes)
        self.metrics: dict[str, float] = {}
        self.writer = None
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
        name = self.cfg.device
        if name == "auto":
            name = "cuda" if torch.cuda.is_available() else "cpu"
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError("device cuda requested but CUDA is not available; use --device cpu")
        if name == "cuda" and self.world > 1:
            name = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        self.device = torch.device(name)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        amp = self.cfg.amp
        if amp == "auto":
            amp = "fp16" if self.device.type == "cuda" else "off"
        if amp == "fp16" and self.device.type == "cpu":
            raise ConfigError("fp16 autocast needs CUDA; on the CPU use --amp bf16 or --amp off")
        self.amp_dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=amp == "fp16")

    def _setup(self) -> None:
        c = self.cfg
        self._setup_device()
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

        train_ds, val_ds = self.task.datasets()
        per_rank = c.batch // self.world
        if len(train_ds) < c.batch:
            raise ConfigError(f"batch {c.batch} is larger than the {len(train_ds)} training images; lower --batch")
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
        self.optimizer = opt_cls(param_groups(self.model, c.weight_decay), lr=c.lr, **extra)
        warmup, total = round(c.warmup_epochs * self.steps_per_epoch), c.epochs * self.steps_per_epoch
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
        if ckpt.get("task") != self.task.name or ckpt.get("meta") != self.task.meta():
            raise InputError(
                f"{path} was saved for {ckpt.get('task')} {ckpt.get('meta', {}).get('model')!r}, not "
                f"{self.task.name} {self.task.meta().get('model')!r} with these classes; resume with the same model and data"
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
    def reduce(self, sums: Stats) -> Stats:
        if self.world > 1:
            for v in sums.values():
                dist.all_reduce(v)
        return sums

    def all_empty(self, empty: bool, train: bool) -> bool:
        """Skip a batch on every rank when one rank has nothing to train on, so DDP's all-reduces stay in step."""
        if self.world == 1 or not train:
            return empty
        flag = torch.tensor([float(empty)], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict:
        """Metrics of a model on a loader (for `val`): the same loop as training, without the updates."""
        if not hasattr(self, "device"):
            self._setup_device()
        return self.run_epoch(model.to(self.device), loader, False, "val")

    def run_epoch(self, model: nn.Module, loader: DataLoader, train: bool, desc: str) -> dict:
        """One pass over a loader, training or evaluating; returns the task's metrics reduced over ranks."""
        c = self.cfg
        model.train(train)
        sums: Stats = {}
        seen, t0 = 0, time.perf_counter()
        bar = tqdm(loader, desc=desc, disable=not self.main, leave=False, mininterval=1.0, dynamic_ncols=True)
        for i, batch in enumerate(bar, start=self.start_batch if train else 0):
            sums["skipped"] = sums.get("skipped", 0) + torch.tensor(float(batch.get("skipped", 0)), dtype=torch.float64)
            if self.all_empty(len(batch["images"]) == 0, train):  # every image failed to load (already warned)
                continue
            images = batch["images"].to(self.device, non_blocking=True)
            if c.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            batch = {**batch, "images": images}
            step = train and ((i + 1) % c.accumulate == 0 or i + 1 == len(loader) + self.start_batch)
            sync = nullcontext() if step or self.world == 1 or not train else model.no_sync()
            with sync, torch.set_grad_enabled(train):
                with torch.autocast(self.device.type, self.amp_dtype, enabled=self.amp_dtype is not None):
                    loss, stats = self.task.forward(model, batch, train)
                if train:
                    self._check_finite(loss, i)
                    self.scaler.scale(loss / c.accumulate).backward()
            if step:
                self._step()
            for k, v in stats.items():
                v = v.detach().double().cpu()
                sums[k] = sums[k] + v if k in sums else v
            seen += len(images)
            if train:
                self._batch = i + 1
            if train and self.main:
                m = self.task.summarize(sums)
                ips = seen * self.world / (time.perf_counter() - t0)
                lr = self.optimizer.param_groups[0]["lr"]
                bar.set_postfix(
                    {k.split("/")[-1]: f"{v:.3g}" for k, v in m.items() if isinstance(v, float)}
                    | {"lr": f"{lr:.3g}", "img/s": f"{ips:.0f}"}
                )
        elapsed = time.perf_counter() - t0
        self.reduce(sums)
        if float(sums.get("n", 0)) == 0:
            what = "training" if train else "validation"
            where = getattr(loader.dataset, "where", "the dataset")
            raise InputError(f"no readable {what} images in {where}: every image failed to load")
        out = self.task.summarize(sums)
        out["skipped"] = int(sums["skipped"].item())
        if train:
            out["img_s"] = seen * self.world / elapsed
        return out

    def _check_finite(self, loss: torch.Tensor, i: int) -> None:
        bad = (~torch.isfinite(loss.detach())).float().reshape(1)
        if self.world > 1:
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        if bad.item():
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
        self._setup()
        if resume:
            self.load(resume)
        log = self._start_logging(resumed=bool(resume))
        self.epoch = self.start_epoch
        try:
            for epoch in range(self.start_epoch, self.cfg.epochs):
                self.epoch = epoch
                self._batch = self.start_batch
                self.train_sampler.set_epoch(self.epoch)
                self.train_sampler.start = self.start_batch * (self.cfg.batch // self.world)
                lr = self.optimizer.param_groups[0]["lr"]
                train = self.run_epoch(self.train_model, self.train_loader, True, f"{self.epoch + 1}/{self.cfg.epochs}")
                self.start_batch, self._batch = 0, -1  # -1: this epoch's training is done
                val = self.run_epoch(self.ema.module if self.ema else self.model, self.val_loader, False, "val")
                self.metrics = {
                    "epoch": self.epoch + 1,
                    **{f"train/{k}": v for k, v in train.items() if isinstance(v, float) and k != "img_s"},
                    **{f"val/{k}": v for k, v in val.items() if isinstance(v, float)},
                    "lr": lr,
                    "img_s": train["img_s"],
                    "skipped": train["skipped"] + val["skipped"],
                }
                log(self.metrics)
                fitness = self.metrics[self.task.fitness]
                if fitness > self.best:
                    self.best = fitness
                    self.save("best.pt", epoch=self.epoch + 1, full=False)
                self.save("last.pt", epoch=self.epoch + 1)
        except KeyboardInterrupt:  # interrupted in validation: keep the trained epoch, skip its metrics row
            done = self._batch == -1
            self.save("last.pt", epoch=self.epoch + done, batch=0 if done else self._batch)
            if self.main:
                print(f"interrupted: saved {self.wdir / 'last.pt'}; continue with --resume")
            raise
        finally:
            self._finish()
        return self.metrics

    # ---- logging ------------------------------------------------------------------------------------------------
    def _start_logging(self, resumed: bool) -> Callable[[dict], None]:
        """args.yaml, results.csv (one row an epoch) and TensorBoard, on rank 0; returns the per-epoch logger."""
        self.writer = None
        if not self.main:
            return lambda m: None
        from torch.utils.tensorboard import SummaryWriter

        self.save_dir.mkdir(parents=True, exist_ok=True)
        (self.save_dir / "args.yaml").write_text(yaml.safe_dump(self.args, sort_keys=False))
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

    def _finish(self) -> None:
        if self.main and self.writer is not None:
            self.writer.close()
            from cspnet.engine.plots import plot_results

            if (self.save_dir / "results.csv").exists():
                plot_results(self.save_dir / "results.csv")
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _write_csv(path: Path, rows: list[dict]) -> None:
    def write(f) -> None:
        if rows:
            w = csv.DictWriter(f, fieldnames=list(rows[-1]))
            w.writeheader()
            w.writerows(rows)

    atomic_write(path, write, mode="w")
