"""`cspnet <task> train|val|predict` for every registered task: the shared train options, run folders and resume.

A task brings its settings dataclass, its own options and its val/predict commands (a `TaskSpec`); everything
about *how* to train (TrainCfg), where runs go and how they resume is here, once.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path

from cspnet.cli_args import fraction, image_size, nonneg_float, nonneg_int, positive_float, positive_int
from cspnet.engine.amp import AMP_MODES
from cspnet.engine.config import flat_values
from cspnet.engine.launch import RESUME_SAFE, TRAIN_FIELDS, new_trainer, option_flag, resume_trainer
from cspnet.engine.task_registry import TASK_MODULES, TASKS, TaskSpec, get_task
from cspnet.engine.trainer import TrainCfg, Trainer
from cspnet.errors import ConfigError, InputError


# ---- train ------------------------------------------------------------------------------------------------------
def add_train_args(
    p: argparse.ArgumentParser, defaults: dict | None = None, project: str = "runs/exp", resume_safe: tuple = ()
) -> None:
    """The options every task's `train` shares: how to train (TrainCfg), the run folder, resume.

    Defaults are None in the namespace (so --resume can tell what was given); the help shows the real default.
    """
    d = {**dataclasses.asdict(TrainCfg()), **(defaults or {})}
    p.add_argument("--epochs", type=positive_int, help=f"default {d['epochs']}")
    p.add_argument("--batch", type=positive_int, help=f"total batch over all processes (default {d['batch']})")
    p.add_argument("--lr", type=positive_float, help=f"default {d['lr']}")
    p.add_argument("--optimizer", choices=("sgd", "adamw"), help=f"default {d['optimizer']}")
    p.add_argument("--momentum", type=fraction, help=f"default {d['momentum']}")
    p.add_argument(
        "--weight-decay",
        type=nonneg_float,
        help=f"default {d['weight_decay']}; the task's param groups decide where (classify: not on norms and biases)",
    )
    p.add_argument("--warmup-epochs", type=nonneg_float, help=f"default {d['warmup_epochs']}")
    p.add_argument("--min-lr", type=fraction, help=f"final lr as a fraction of --lr, cosine (default {d['min_lr']})")
    p.add_argument(
        "--cooldown-epochs", type=nonneg_int, help=f"last epochs held at the final lr (default {d['cooldown_epochs']})"
    )
    p.add_argument("--amp", choices=AMP_MODES, help="auto (default): fp16 on CUDA, off on CPU")
    p.add_argument("--no-ema", dest="ema", action="store_const", const=False, help="no EMA of the weights")
    p.add_argument("--ema-decay", type=fraction, help=f"default {d['ema_decay']}")
    p.add_argument("--accumulate", type=positive_int, help=f"batches per optimizer step (default {d['accumulate']})")
    p.add_argument("--channels-last", action="store_const", const=True)
    p.add_argument("--seed", type=nonneg_int, help=f"default {d['seed']}")
    p.add_argument("--deterministic", action="store_const", const=True, help="deterministic algorithms (exact resume)")
    p.add_argument("--workers", type=nonneg_int, help=f"data loader processes (default {d['workers']})")
    p.add_argument("--device", help="auto, cpu, cuda (default auto)")
    p.add_argument("--sync-bn", action="store_const", const=True, help="SyncBatchNorm under torchrun (CUDA only)")
    p.add_argument("--project", default=project, help=f"folder of runs (default {project})")
    p.add_argument(
        "--name",
        default=None,
        help="run folder under --project; an existing one is an error (no overwrite, no silent rename) "
        "unless --exist-ok or --resume. Default: the next free exp, exp2, ...",
    )
    p.add_argument("--exist-ok", action="store_true", help="reuse an existing run folder")
    p.add_argument(
        "--resume",
        nargs="?",
        const="last",
        default=None,
        help="continue --name's last.pt, or PATH/TO/last.pt (the run folder is where that file is now); "
        f"{', '.join(option_flag(k) for k in (*RESUME_SAFE, *resume_safe))} may change, other options must match the run",
    )


def build_trainer(args: argparse.Namespace) -> tuple[Trainer, str | None]:
    """The Trainer a `<task> train` command line asks for, and the checkpoint to resume from (or None)."""
    spec: TaskSpec = args.task_spec
    task_fields = set(flat_values(spec.cfg()))  # nested settings (DetectCfg.aug) are flat options
    given = {k: v for k, v in vars(args).items() if k in task_fields | TRAIN_FIELDS and v is not None}
    if not args.resume:
        return new_trainer(spec, given, args.project, args.name, args.exist_ok), None
    from cspnet.engine.checkpoint import load_checkpoint

    if args.resume == "last":
        if not args.name:
            raise ConfigError("--resume needs --name RUN (or --resume PATH/TO/last.pt)")
        resume = Path(args.project) / args.name / "weights" / "last.pt"
        if not resume.is_file():
            raise ConfigError(
                f"{resume} not found: run {args.name!r} has no checkpoint to resume; start it anew with "
                "--exist-ok, or pick another --name"
            )
    else:
        resume = Path(args.resume)
    ckpt = load_checkpoint(resume)
    if ckpt.get("task") != spec.name or not isinstance(ckpt.get("args"), dict):
        raise InputError(f"{resume} is not a checkpoint of `cspnet {spec.name} train`; pass its last.pt")
    return resume_trainer(spec, given, resume, ckpt), str(resume)


def cmd_train(args: argparse.Namespace) -> int:
    trainer, resume = build_trainer(args)
    metrics = trainer.fit(resume=resume)
    if trainer.main:
        vals = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k.startswith("val/"))
        print(f"done: {trainer.save_dir} ({vals})")
    return 0


def add_eval_args(p: argparse.ArgumentParser, data_help: str = "dataset") -> None:
    """Options a `val` command shares: weights, data, batch, workers, device, amp, img."""
    p.add_argument("--weights", required=True, help="best.pt or last.pt of a training run")
    p.add_argument("--data", required=True, help=data_help)
    p.add_argument("--img", type=image_size, default=None, help="image size (default: the training size)")
    p.add_argument("--batch", type=positive_int, default=64)
    p.add_argument("--workers", type=nonneg_int, default=2)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--amp", choices=AMP_MODES, default="off")


def add_task_parser(sub: argparse._SubParsersAction, spec: TaskSpec) -> argparse.ArgumentParser:
    """`cspnet <task>` with train (shared options + the task's), and the task's val and predict."""
    p = sub.add_parser(spec.name, help=spec.help)
    _fill_task_parser(p, spec)
    return p


def _fill_task_parser(p: argparse.ArgumentParser, spec: TaskSpec) -> None:
    p.set_defaults(task_spec=spec)
    tsub = p.add_subparsers(dest="action", required=True)
    t = tsub.add_parser("train", help=f"train a {spec.name} model (also under torchrun --nproc_per_node N)")
    if spec.add_train_args:
        spec.add_train_args(t)
    add_train_args(t, spec.train_defaults, project=f"runs/{spec.name}", resume_safe=spec.resume_safe)
    t.set_defaults(func=cmd_train)
    for action, add, cmd in (("val", spec.add_val_args, spec.val), ("predict", spec.add_predict_args, spec.predict)):
        if cmd is not None:
            a = tsub.add_parser(action, help=(cmd.__doc__ or "").strip().split("\n")[0])
            if add:
                add(a)
            a.set_defaults(func=cmd)


def _when_used(parser: argparse.ArgumentParser, fill: Callable[[argparse.ArgumentParser], None]) -> None:
    """Call fill(parser) just before `parser` first parses or formats its help (argparse reaches a sub-command's
    parser through these two methods only), so an unused sub-command costs nothing."""

    def ready() -> None:
        del parser.parse_known_args, parser.format_help  # the instance's own methods again
        fill(parser)

    def parse_known_args(*args, **kwargs):
        ready()
        return parser.parse_known_args(*args, **kwargs)

    def format_help() -> str:
        ready()
        return parser.format_help()

    parser.parse_known_args = parse_known_args
    parser.format_help = format_help


def add_parser(sub: argparse._SubParsersAction) -> None:
    """`cspnet <task>` for every built-in task; a task's module is imported only when its command line is parsed."""
    for name, entry in TASK_MODULES.items():
        if name in TASKS:  # already imported: nothing to save
            add_task_parser(sub, TASKS[name])
        else:
            p = sub.add_parser(name, help=entry.help)
            _when_used(p, lambda p, name=name: _fill_task_parser(p, get_task(name)))
