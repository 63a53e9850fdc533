"""`cspnet <task> train|val|predict` for every registered task: the shared train options, run folders and resume.

A task brings its settings dataclass, its own options and its val/predict commands (a `TaskSpec`); everything
about *how* to train (TrainCfg), where runs go and how they resume is here, once.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from cspnet.cli_args import fraction, image_size, nonneg_float, nonneg_int, positive_float, positive_int
from cspnet.engine import dist
from cspnet.engine.amp import AMP_MODES
from cspnet.engine.config import flat_values, from_flat
from cspnet.engine.run import RunDir, claim_run, hold_run, run_dir_of
from cspnet.engine.task_registry import TASK_MODULES, TaskSpec, get_task
from cspnet.engine.trainer import TrainCfg, Trainer
from cspnet.errors import ConfigError, CspnetError, InputError

TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainCfg)} - {"save_dir"}
RESUME_SAFE = ("epochs", "workers", "device")  # TrainCfg fields a --resume may change


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
        f"{', '.join(_flag(k) for k in (*RESUME_SAFE, *resume_safe))} may change, other options must match the run",
    )


def _flag(k: str) -> str:
    return "--" + k.replace("_", "-")


def _resume_values(spec: TaskSpec, ckpt_path: Path, ckpt: dict, given: dict) -> dict:
    """The saved settings, with the changes a resume may make applied (and said) and the others refused."""
    saved = ckpt["args"]
    if "model" in given and "model" in saved and given["model"] != saved["model"]:
        raise InputError(
            f"{ckpt_path} was trained as {saved['model']}, not {given['model']}; drop --model to resume it"
        )
    changed = {k: v for k, v in given.items() if k in saved and saved[k] != v}
    unsafe = [k for k in changed if k not in (*RESUME_SAFE, *spec.resume_safe)]
    if unsafe:
        was = ", ".join(f"{_flag(k)} {changed[k]} (run: {saved[k]})" for k in unsafe)
        raise ConfigError(
            f"--resume continues the run as trained; {was} cannot change mid-run: drop it, or start a new run "
            f"from these weights with --weights {ckpt_path}"
        )
    done = int(ckpt.get("epoch", 0))
    if "epochs" in changed and changed["epochs"] <= done:
        raise ConfigError(f"{ckpt_path} has trained {done} epochs; pass --epochs above {done} to train longer")
    if done >= int(saved.get("epochs", 0)) and "epochs" not in changed:
        raise ConfigError(f"{ckpt_path} finished its {done} epochs; pass --epochs above {done} to train longer")
    said = [f"{_flag(k)} {changed[k]} (was {saved[k]})" for k in changed if k not in ("workers", "device")]
    if said and dist.is_main():
        print(f"resume: applying {', '.join(said)}", flush=True)
    return {**saved, **changed}


def _claim(project: str, name: str | None, exist_ok: bool) -> RunDir | None:
    """Rank 0 takes the run folder; under torchrun the others learn its path (or rank 0's error)."""
    run, msg = None, None
    if dist.is_main():
        try:
            run = claim_run(project, name, exist_ok)
        except CspnetError as e:
            msg = str(e)
    path, msg = dist.broadcast((str(run.path) if run else None, msg))
    if msg:
        raise ConfigError(msg)
    return run if run else _Elsewhere(Path(path))


class _Elsewhere:
    """The run folder held by rank 0 (other ranks only need its path)."""

    def __init__(self, path: Path):
        self.path = path

    def release(self, keep: bool = True) -> None:
        pass


def _init_distributed(device: str) -> None:
    """Under torchrun, the process group before the run folder: rank 0 takes it and tells the others."""
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        dist.setup(device)


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
    values = _resume_values(spec, resume, ckpt, given)
    _init_distributed(values["device"])
    folder = run_dir_of(resume)
    run = hold_run(folder) if dist.is_main() else _Elsewhere(folder)
    return _trainer(spec, values, run), str(resume)


def new_trainer(spec: TaskSpec, given: dict, project: str, name: str | None, exist_ok: bool = False) -> Trainer:
    """A Trainer for a new run of `given` flat settings (task and TrainCfg fields) in a freshly claimed run folder:
    `<task> train` and `cspnet.Model.train` both start here."""
    missing = [_flag(k) for k in spec.required if k not in given]
    if missing:
        raise ConfigError(f"{spec.name} train needs {' and '.join(missing)} (or --resume)")
    defaults = {**dataclasses.asdict(TrainCfg()), **spec.train_defaults}
    values = {**defaults, **flat_values(spec.cfg()), **given}
    _init_distributed(values["device"])
    return _trainer(spec, values, _claim(project, name, exist_ok))


def _trainer(spec: TaskSpec, values: dict, run: RunDir | _Elsewhere) -> Trainer:
    values = {**values, "save_dir": str(run.path)}
    try:
        task = spec.task(from_flat(spec.cfg, values))
        cfg = TrainCfg(**{k: v for k, v in values.items() if k in TRAIN_FIELDS | {"save_dir"}})
        return Trainer(task, cfg, run=run)
    except BaseException:
        run.release(keep=False)
        raise


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
    return p


def add_parser(sub: argparse._SubParsersAction) -> None:
    for name in TASK_MODULES:
        add_task_parser(sub, get_task(name))
