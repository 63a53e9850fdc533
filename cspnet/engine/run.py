"""Run folders: `runs/<task>/<name>/`, taken atomically and locked while a training writes to them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from cspnet.errors import ConfigError

try:
    import fcntl
except ImportError:  # Windows: the atomic mkdir still keeps two new runs apart
    fcntl = None


class RunInUse(ConfigError):
    """The run folder is locked by another training (a scheduler may pick another run)."""


class RunDir:
    """A run folder this process holds: `release()` unlocks it, and removes it when it was new and kept nothing."""

    def __init__(self, path: Path, fresh: bool):
        self.path, self.fresh = path, fresh
        self._lock = None
        if fcntl is not None:
            self._lock = open(path / ".lock", "a+")  # noqa: SIM115 (held until release)
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                self._lock.seek(0)
                pid = self._lock.read().strip() or "?"
                self._lock.close()
                raise RunInUse(
                    f"run folder {path} is in use by another training (pid {pid}); wait for it or pick another --name"
                ) from None
            self._lock.seek(0)
            self._lock.truncate()
            self._lock.write(str(os.getpid()))
            self._lock.flush()

    def release(self, keep: bool = True) -> None:
        if self._lock is not None:
            self._lock.close()  # closing drops the flock
            self._lock = None
        if self.fresh and not keep:
            shutil.rmtree(self.path, ignore_errors=True)


def project_dir(project: str | Path) -> Path:
    """The --project folder, created when missing; a file in its path is one error line."""
    project = Path(project)
    if project.exists() and not project.is_dir():
        raise ConfigError(f"--project {project} is a file; pass a folder (it is created when missing)")
    try:
        project.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ConfigError(f"cannot create --project {project}: a part of the path is a file; pass a folder") from None
    except PermissionError:
        raise ConfigError(f"cannot create --project {project}: permission denied; pass a writable folder") from None
    return project


def claim_run(project: str | Path, name: str | None, exist_ok: bool = False, default: str = "exp") -> RunDir:
    """Take `project/name` for a new run (mkdir is atomic: of two runs started at once, one gets an error).

    Without a name the next free exp, exp2, exp3, ... (`default`, ...) is taken, also atomically.
    """
    project = project_dir(project)
    if name:
        d = project / name
        try:
            d.parent.mkdir(parents=True, exist_ok=True)  # --name group/run
        except (FileExistsError, NotADirectoryError):
            raise ConfigError(
                f"cannot create run folder {d}: a part of the path is a file; pick another --name"
            ) from None
        try:
            d.mkdir()
            return RunDir(d, fresh=True)
        except FileExistsError:
            if not d.is_dir():
                raise ConfigError(f"{d} is a file; pick another --name") from None
            if exist_ok:
                return RunDir(d, fresh=False)
        hint = "pass --resume to continue it" if (d / "weights" / "last.pt").is_file() else "it holds no checkpoint"
        raise ConfigError(f"run folder {d} exists ({hint}); pass --exist-ok to reuse it, or another --name")
    for i in range(1, 10_000):
        d = project / (default if i == 1 else f"{default}{i}")
        try:
            d.mkdir()
            return RunDir(d, fresh=True)
        except FileExistsError:
            continue
    raise ConfigError(f"too many runs in {project}; pass --name")


def run_dir_of(checkpoint: str | Path) -> Path:
    """The run folder of a checkpoint where it is now: RUN/weights/last.pt -> RUN (else the file's folder)."""
    parent = Path(checkpoint).resolve().parent
    return parent.parent if parent.name == "weights" else parent


def hold_run(path: str | Path) -> RunDir:
    """Lock an existing run folder (for --resume)."""
    return RunDir(Path(path), fresh=False)
