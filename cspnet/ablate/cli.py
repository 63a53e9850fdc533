"""`cspnet ablate`: train and measure a grid of variants of one base model with one recipe; resumable."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from cspnet.ablate.budgets import BUDGETS, get_budget
from cspnet.cli_args import nonneg_int, positive_float, positive_int
from cspnet.engine.amp import AMP_MODES
from cspnet.errors import ConfigError, CspnetError

# options passed on unchanged to the --jobs child processes
FORWARD = ("base", "data", "budget", "seeds", "name", "project", "epochs", "subset", "val_subset", "img", "batch")
FORWARD += ("lr", "workers", "device", "amp")


def parse_parts(text: str) -> tuple[str, ...]:
    from cspnet.ablate.study import PARTS  # the study (engine, torchvision) loads only when an ablation runs

    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    bad = [p for p in parts if p not in PARTS]
    if bad or not parts:
        raise argparse.ArgumentTypeError(
            f"unknown part(s) {', '.join(bad) or text!r}; use a comma list of {', '.join(PARTS)}"
        )
    return parts


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad shard {text!r}; write I/N, e.g. 0/4") from None
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"bad shard {text!r}: need 0 <= I < N")
    return i, n


def default_parts(device: str | None) -> tuple[str, ...]:
    """Latency is measured on the CPU: a GPU box trains and reports unless --parts asks for measure."""
    from cspnet.ablate.study import PARTS

    if device and device.startswith("cuda"):
        return ("train", "report")
    return PARTS


def _budget(args: argparse.Namespace):
    changes = {k: getattr(args, k) for k in ("epochs", "subset", "val_subset", "img", "batch", "lr", "workers")}
    changes |= {k: getattr(args, k) for k in ("device", "amp", "threads", "small_input")}
    changes["latency_runs"] = args.latency_runs
    return get_budget(args.budget, args.base, **changes)


def _options(args: argparse.Namespace, keys: tuple[str, ...] = FORWARD) -> list[str]:
    """The command-line options of `args` (the study's own, not the runtime ones unless named)."""
    argv = []
    for k in keys:
        v = getattr(args, k)
        if v is not None and not (k == "jobs" and v == 1):
            argv += [f"--{k.replace('_', '-')}", ",".join(v) if isinstance(v, tuple) else str(v)]
    for g in args.grid or []:
        argv += ["--grid", g]
    if args.small_input:
        argv.append("--small-input")
    return argv


def _child_argv(args: argparse.Namespace, shard: int, jobs: int) -> list[str]:
    argv = [sys.executable, "-m", "cspnet.cli", "ablate", *_options(args)]
    return argv + ["--parts", "train", "--shard", f"{shard}/{jobs}"]


def run_jobs(args: argparse.Namespace, study_dir: Path) -> None:
    """Train the (variant, seed) units in `args.jobs` parallel processes (e.g. sharing one GPU); logs in logs/."""
    logs = study_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.jobs)))
    procs = []
    for i in range(args.jobs):
        log = (logs / f"train_shard{i}.log").open("a")
        procs.append(
            (i, log, subprocess.Popen(_child_argv(args, i, args.jobs), stdout=log, stderr=subprocess.STDOUT, env=env))
        )
    print(f"ablate: training in {args.jobs} processes; logs in {logs}")
    failed = []
    try:
        for i, log, p in procs:
            if p.wait():
                failed.append(i)
            log.close()
    except KeyboardInterrupt:  # pass Ctrl-C or SIGTERM on (as SIGTERM: a shell's background jobs ignore SIGINT)
        for _, _, p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for _, _, p in procs:
            p.wait()
        raise
    if failed:
        raise CspnetError(
            f"training shard(s) {', '.join(map(str, failed))} failed; see {logs}/train_shard*.log, then run the same "
            "command again: finished variants are kept and interrupted ones resume"
        )


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM (timeout, a scheduler) stops like Ctrl-C: the training saves its last.pt


def _cmd_ablate(args: argparse.Namespace) -> int:
    from cspnet.ablate.study import Study, StudyCfg, run_study

    signal.signal(signal.SIGTERM, _interrupt)
    budget = _budget(args)
    parts = args.parts or default_parts(budget.device)
    name = args.name or f"{args.base}_{budget.name}"
    shown = _options(args, (*FORWARD, "parts", "jobs", "threads", "latency_runs"))
    command = "cspnet ablate " + shlex.join(shown)
    cfg = StudyCfg(
        base=args.base,
        budget=budget,
        data=args.data,
        grid=args.grid,
        seeds=args.seeds,
        name=name,
        project=args.project,
        parts=parts,
        shard=args.shard,
        command=command if args.shard is None else "",
    )
    if args.jobs > 1 and "train" in parts:
        if args.shard is not None or int(os.environ.get("WORLD_SIZE", 1)) > 1:
            raise ConfigError("--jobs runs its own processes; drop --shard and do not start it under torchrun")
        if not args.data:
            raise ConfigError("training needs --data PATH")
        study = Study(StudyCfg(**{**cfg.__dict__, "parts": ("train",)}))
        study.open()  # checks the recipe and records the command before any process starts
        run_jobs(args, study.dir)
        cfg.parts = tuple(p for p in parts if p != "train")
        cfg.command = ""
    done = run_study(cfg)
    if int(os.environ.get("RANK", 0)) == 0:
        print("ablate: " + ", ".join(f"{k} {len(v)}" for k, v in done.items()))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ablate",
        help="train and measure a grid of CSP variants of one model (fusion, gamma, any overrides); resumable",
        description="Trains every variant with the same recipe, seeds, data and budget, measures params, MACs and "
        "CPU latency, and writes runs/ablate/NAME/results.{csv,md} and plots. Run it again to continue.",
    )
    p.add_argument("--base", required=True, help="zoo model, e.g. peleenet, resnet10, or your registered model")
    p.add_argument("--data", help="folder or .zip with train/<class>/ and val/ (or test/); needed to train")
    p.add_argument(
        "--grid",
        action="append",
        help="a variant as create_model overrides, e.g. 'partial_ratio=0.25,fusion=last' (gamma= is partial_ratio); "
        "repeatable; 'default' is the paper's grid (fusion first/last/both, gamma 0.25/0.5/0.75); the plain base "
        "is always included (default: the paper's grid)",
    )
    p.add_argument(
        "--budget", choices=tuple(BUDGETS), default="cpu", help="smoke: seconds; cpu: CIFAR-10 on a CPU; full: ImageNet"
    )
    p.add_argument("--seeds", type=positive_int, default=1, help="seeds per variant (top-1 as mean ± std)")
    p.add_argument("--name", default=None, help="study folder under --project (default BASE_BUDGET)")
    p.add_argument("--project", default="runs/ablate")
    p.add_argument(
        "--parts",
        type=parse_parts,
        default=None,
        help="comma list of train, measure, report (default: all; train,report with --device cuda)",
    )
    p.add_argument(
        "--jobs",
        type=positive_int,
        default=1,
        help="train this many variants/seeds at once in separate processes (one GPU)",
    )
    p.add_argument("--shard", type=parse_shard, default=None, help=argparse.SUPPRESS)
    g = p.add_argument_group("budget changes (a study keeps the recipe it started with)")
    g.add_argument("--epochs", type=positive_int, default=None)
    g.add_argument("--subset", type=nonneg_int, default=None, help="training images (0: all)")
    g.add_argument("--val-subset", type=nonneg_int, default=None, help="validation images (0: all)")
    g.add_argument("--img", type=positive_int, default=None)
    g.add_argument("--small-input", action="store_const", const=True, default=None, help="stem without downsampling")
    g.add_argument("--batch", type=positive_int, default=None)
    g.add_argument("--lr", type=positive_float, default=None)
    g.add_argument("--workers", type=nonneg_int, default=None, help="data-loader processes per training")
    g.add_argument("--device", default=None, help="auto, cpu, cuda (training only; latency is always CPU)")
    g.add_argument("--amp", choices=AMP_MODES, default=None)
    g.add_argument("--threads", type=positive_int, default=None, help="torch threads for the CPU measurements")
    g.add_argument("--latency-runs", type=positive_int, default=None, help="interleaved timed runs per variant")
    p.set_defaults(func=_cmd_ablate)
