"""Starting a training of a registered task: a new run in a freshly claimed folder, or a resumed one with the
changes a resume may make. `<task> train` (engine/cli.py) and `cspnet.Model.train` (engine/api.py) both start here."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from cspnet.engine import dist
from cspnet.engine.config import flat_values, from_flat
from cspnet.engine.run import RunDir, claim_run, hold_run, run_dir_of
from cspnet.engine.task_registry import TaskSpec
from cspnet.engine.trainer import TrainCfg, Trainer
from cspnet.errors import ConfigError, CspnetError, InputError

TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainCfg)} - {"save_dir"}
RESUME_SAFE = ("epochs", "workers", "device")  # TrainCfg fields a --resume may change


def option_flag(k: str) -> str:
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
        was = ", ".join(f"{option_flag(k)} {changed[k]} (run: {saved[k]})" for k in unsafe)
        raise ConfigError(
            f"--resume continues the run as trained; {was} cannot change mid-run: drop it, or start a new run "
            f"from these weights with --weights {ckpt_path}"
        )
    done = int(ckpt.get("epoch", 0))
    if "epochs" in changed and changed["epochs"] <= done:
        raise ConfigError(f"{ckpt_path} has trained {done} epochs; pass --epochs above {done} to train longer")
    if done >= int(saved.get("epochs", 0)) and "epochs" not in changed:
        raise ConfigError(f"{ckpt_path} finished its {done} epochs; pass --epochs above {done} to train longer")
    said = [f"{option_flag(k)} {changed[k]} (was {saved[k]})" for k in changed if k not in ("workers", "device")]
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


def new_trainer(spec: TaskSpec, given: dict, project: str, name: str | None, exist_ok: bool = False) -> Trainer:
    """A Trainer for a new run of `given` flat settings (task and TrainCfg fields) in a freshly claimed run folder:
    `<task> train` and `cspnet.Model.train` both start here."""
    missing = [option_flag(k) for k in spec.required if k not in given]
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


def resume_trainer(spec: TaskSpec, given: dict, resume: Path, ckpt: dict) -> Trainer:
    """A Trainer that continues the run of checkpoint `ckpt` (read from `resume`) in the folder it lies in."""
    values = _resume_values(spec, resume, ckpt, given)
    _init_distributed(values["device"])
    folder = run_dir_of(resume)
    run = hold_run(folder) if dist.is_main() else _Elsewhere(folder)
    return _trainer(spec, values, run)
