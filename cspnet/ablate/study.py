"""A study: every variant of a grid trained with one recipe (on the engine) and measured with one harness run.

runs/ablate/<name>/
  study.json                   base, recipe, classes, variants, the commands that ran
  <variant>/variant.json       model + create_model overrides
  <variant>/measure.json       params, MACs, CPU latency (batch 1 and 8, fused and unfused), train step, memory
  <variant>/seed<k>/           the engine's run folder (weights/last.pt, results.csv); train.json once finished
  results.csv, results.md, acc_vs_macs.png, acc_vs_latency.png

Each part of each variant (and seed) is kept once done and skipped on the next run; a killed training resumes from
its last.pt. `parts` picks what runs: train (any device), measure (always the CPU), report.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cspnet.ablate.budgets import Budget
from cspnet.ablate.grid import PLAIN, GridVariant, build_grid
from cspnet.engine import Trainer
from cspnet.engine.run import RunDir, project_dir
from cspnet.engine.tasks.classify import ClassifyCfg, ClassifyTask
from cspnet.errors import ConfigError, InputError
from cspnet.io import write_json

PARTS = ("train", "measure", "report")


@dataclass
class StudyCfg:
    """What a study runs; `shard=(i, n)` trains only every n-th (variant, seed) from the i-th (parallel processes)."""

    base: str
    budget: Budget
    data: str | None = None
    grid: list[str] | None = None
    seeds: int = 1
    name: str = "exp"
    project: str = "runs/ablate"
    parts: tuple[str, ...] = PARTS
    shard: tuple[int, int] | None = None
    command: str = ""
    log: list[str] = field(default_factory=list)


class VariantTask(ClassifyTask):
    """The classify task with create_model overrides (saved in the checkpoint's meta, so `classify val` rebuilds it)."""

    def __init__(self, cfg: ClassifyCfg, overrides: dict):
        super().__init__(cfg)
        self.overrides = overrides

    def meta(self) -> dict:
        meta = super().meta()
        meta["overrides"] = {**meta.get("overrides", {}), **self.overrides}
        return meta


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


class Study:
    """One study folder: its variants, what is done, and the parts that run."""

    def __init__(self, cfg: StudyCfg):
        if cfg.seeds < 1:
            raise ConfigError("--seeds must be at least 1")
        for p in cfg.parts:
            if p not in PARTS:
                raise ConfigError(f"unknown part {p!r}; choose from {', '.join(PARTS)}")
        self.cfg = cfg
        self.variants: list[GridVariant] = build_grid(cfg.base, cfg.grid)
        self.dir = project_dir(cfg.project) / cfg.name
        self.main = int(os.environ.get("RANK", 0)) == 0
        self.done: dict[str, list[str]] = {"trained": [], "resumed": [], "skipped": [], "measured": []}

    # ---- study.json: pins the recipe, collects variants and commands ----------------------------------------------
    def open(self) -> dict:
        """Create or check study.json; returns it. A different base or recipe is refused (use another --name)."""
        c = self.cfg
        path = self.dir / "study.json"
        saved = read_json(path)
        recipe = c.budget.recipe()
        if saved is None:
            if "train" not in c.parts and not c.data:
                raise ConfigError(f"no study at {self.dir}; train it first (--parts train --data PATH)")
            saved = {"base": c.base, "budget": c.budget.name, "recipe": recipe, "variants": {}, "commands": []}
        else:
            if saved["base"] != c.base:
                raise ConfigError(f"study {self.dir} has base {saved['base']!r}, not {c.base!r}; pass another --name")
            if "train" not in c.parts:  # measuring or reporting a study: its own recipe, whatever the budget flags say
                c.budget = dataclasses.replace(c.budget, **saved["recipe"])
                recipe = c.budget.recipe()
                if c.grid is None:  # and its own variants
                    self.variants = [
                        GridVariant(e["label"], e["model"], tuple(sorted(e["overrides"].items())))
                        for e in saved["variants"].values()
                    ]
            old = {**Budget(c.budget.name).recipe(), **saved["recipe"]}  # fields added since: their defaults
            diff = {k: (old.get(k), v) for k, v in recipe.items() if old.get(k) != _plain(v)}
            if diff:
                what = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in diff.items())
                raise ConfigError(
                    f"study {self.dir} was run with another recipe ({what}); every variant must share it: "
                    "drop the changed options or pass another --name"
                )
        if c.data:
            from cspnet.data import open_split

            classes = open_split(c.data, "train").classes
            if saved.get("classes") not in (None, classes):
                raise InputError(
                    f"{c.data} has classes {classes[:4]}..., the study was trained on {saved['classes'][:4]}..."
                )
            saved["classes"] = classes
            saved["data"] = str(c.data)
        for v in self.variants:
            entry = {"label": v.label, "model": v.model, "overrides": dict(v.overrides)}
            old = saved["variants"].get(v.slug)
            if old is not None and (old["model"], old["overrides"]) != (v.model, _plain(dict(v.overrides))):
                raise ConfigError(f"variant {v.label!r} of {self.dir} was {old['model']} {old['overrides']}; rename it")
            saved["variants"][v.slug] = entry
        if c.command and self.main and set(c.parts) - {"report"}:  # a report alone changes no result
            saved["commands"] = [*saved["commands"], c.command][-20:]
        if self.main:
            write_json(path, saved)
        self.info = saved
        return saved

    # ---- train ------------------------------------------------------------------------------------------------------
    def units(self) -> list[tuple[GridVariant, int]]:
        units = [(v, s) for v in self.variants for s in range(self.cfg.seeds)]
        if self.cfg.shard:
            i, n = self.cfg.shard
            units = units[i::n]
        return units

    def run_dir(self, v: GridVariant, seed: int) -> Path:
        return self.dir / v.slug / f"seed{seed}"

    def train(self) -> None:
        if not self.cfg.data:
            raise ConfigError("training needs --data PATH (a folder or .zip with train/<class>/ and val/ or test/)")
        for v, seed in self.units():
            self.train_one(v, seed)

    def _process_group(self) -> None:
        """Under torchrun, a process group for the next training. The engine destroys its group when a training
        ends; a second init on torchrun's store with the same keys breaks (gloo: connection reset), so each
        training of the study gets its own key prefix in that store."""
        import datetime

        import torch.distributed as dist

        world = int(os.environ.get("WORLD_SIZE", 1))
        if world == 1 or dist.is_initialized():
            return
        device = self.cfg.budget.device
        cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        rank = int(os.environ["RANK"])
        agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"  # torchrun keeps the store in its agent
        store = dist.TCPStore(
            os.environ["MASTER_ADDR"],
            int(os.environ["MASTER_PORT"]),
            world,
            is_master=rank == 0 and not agent,
            timeout=datetime.timedelta(minutes=30),
        )
        self._groups = getattr(self, "_groups", 0) + 1
        prefix = dist.PrefixStore(f"cspnet_ablate_{self._groups}", store)
        dist.init_process_group("nccl" if cuda else "gloo", store=prefix, rank=rank, world_size=world)

    def train_one(self, v: GridVariant, seed: int, epochs: int | None = None) -> dict:
        """Train one variant with one seed; skipped when train.json exists, resumed when last.pt does. `epochs` beyond
        the budget's continue the run at its final lr (Budget.held_to): a finished run resumes from its last.pt."""
        b = self.cfg.budget if epochs is None else self.cfg.budget.held_to(epochs)
        run = self.run_dir(v, seed)
        done = read_json(run / "train.json")
        if done is not None and done["epochs"] >= b.epochs:
            self.done["skipped"].append(f"{v.label}/seed{seed}")
            return done
        if self.main:
            write_json(
                self.dir / v.slug / "variant.json", {"label": v.label, "model": v.model, "overrides": v.kwargs()}
            )
        last = run / "weights" / "last.pt"
        resume = last if last.is_file() else None
        task = VariantTask(b.classify_cfg(v.model, str(self.cfg.data)), v.kwargs())
        tcfg = b.train_cfg(seed=seed, save_dir=str(run))
        print(f"ablate: {'resuming' if resume else 'training'} {v.label} ({v.model} {v.kwargs()}) seed {seed} -> {run}")
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        if self.main:
            run.mkdir(parents=True, exist_ok=True)
        # locked while training (two processes never train one run); a fresh folder left without a checkpoint goes
        self._process_group()
        trainer = Trainer(task, tcfg, run=RunDir(run, fresh=resume is None) if self.main else None)
        metrics = trainer.fit(resume=resume)
        rows = list(csv.DictReader((run / "results.csv").open())) if (run / "results.csv").is_file() else []
        result = {
            "label": v.label,
            "seed": seed,
            "top1": metrics.get("val/top1"),
            "top5": metrics.get("val/top5"),
            "loss": metrics.get("val/loss"),
            "epochs": int(metrics.get("epoch", 0)),
            "curve": [float(r["val/top1"]) for r in rows],
            "img_s": sum(float(r["img_s"]) for r in rows) / len(rows) if rows else None,
            "device": str(trainer.device),
            "world": trainer.world,
            "peak_cuda_mib": torch.cuda.max_memory_allocated() / 2**20 if trainer.device.type == "cuda" else None,
            "wall_s_last_sitting": time.perf_counter() - t0,
            "resumed": resume is not None,
        }
        if self.main:
            write_json(run / "train.json", result)
        self.done["resumed" if resume else "trained"].append(f"{v.label}/seed{seed}")
        return result

    # ---- measure (CPU) ------------------------------------------------------------------------------------------
    def measure(self) -> None:
        """Params, MACs and CPU timings of the variants not measured yet, in one interleaved harness run with the plain
        base as reference (its ratios come from the same run)."""
        from cspnet.ablate.measure import measure_variants

        pending = [v for v in self.variants if not (self.dir / v.slug / "measure.json").is_file()]
        if not pending:
            return
        classes = self.info.get("classes")
        if not classes:
            raise ConfigError(f"{self.dir} has no class list yet; pass --data PATH once")
        plain = self.variants[0]
        group = [plain] + [v for v in pending if v is not plain]
        results = measure_variants(group, self.cfg.budget, num_classes=len(classes))
        for v in pending:
            write_json(self.dir / v.slug / "measure.json", results[v.slug])
            self.done["measured"].append(v.label)

    # ---- all of it ----------------------------------------------------------------------------------------------
    def run(self) -> dict[str, list[str]]:
        self.open()
        parts = self.cfg.parts
        if "train" in parts:
            self.train()
        if "measure" in parts and self.main:
            self.measure()
        if "report" in parts and self.main:
            from cspnet.ablate.report import write_report

            for path in write_report(self.dir):
                print(f"ablate: wrote {path}")
        return self.done


def _plain(v: object) -> object:
    """A value as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(v))


def run_study(cfg: StudyCfg) -> dict[str, list[str]]:
    """Run (or continue) a study; returns what was trained, resumed, skipped and measured."""
    return Study(cfg).run()


__all__ = ["PARTS", "PLAIN", "Study", "StudyCfg", "run_study"]
