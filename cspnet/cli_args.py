"""argparse types shared by every `cspnet` sub-command: a bad value is refused at parse time, in one line.

Numbers: positive_int, nonneg_int, positive_float, nonneg_float, fraction ([0, 1]), image_size (positive; the
stride rule needs the model: cspnet.models.img_size.check_img_size). Paths: existing_file, existing_dir,
existing_path. Overrides: key_value (KEY=VALUE).
Outputs: add_output(parser, "--out", ...) adds the argument and its --force (or --exist-ok) flag; cspnet.cli.main
calls check_outputs(args) right after parsing, so an existing output is refused before any work starts.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from cspnet.errors import ConfigError

OUTPUTS = "_cspnet_outputs"  # namespace attribute listing the output checks of the chosen sub-command


def _number(s: str, kind: type, what: str) -> int | float:
    try:
        v = kind(s)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected {what}, got {s!r}") from None
    if kind is float and not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected {what}, got {s!r}")
    return v


def positive_int(s: str) -> int:
    """An integer >= 1 (batch sizes, runs, epochs, threads)."""
    v = _number(s, int, "a positive integer")
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (>= 1), got {s!r}")
    return v


def nonneg_int(s: str) -> int:
    """An integer >= 0 (counts where 0 means none/off)."""
    v = _number(s, int, "an integer >= 0")
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {s!r}")
    return v


def positive_float(s: str) -> float:
    """A finite number > 0 (learning rate, tolerance)."""
    v = _number(s, float, "a positive number")
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {s!r}")
    return v


def nonneg_float(s: str) -> float:
    """A finite number >= 0 (weight decay, MixUp alpha)."""
    v = _number(s, float, "a number >= 0")
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {s!r}")
    return v


def fraction(s: str) -> float:
    """A probability or fraction in [0, 1]."""
    v = _number(s, float, "a number in [0, 1]")
    if not 0 <= v <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {s!r}")
    return v


def image_size(s: str) -> int:
    """A positive image side in pixels."""
    v = _number(s, int, "an image size in pixels")
    if v < 1:
        raise argparse.ArgumentTypeError(f"image size must be a positive number of pixels, got {s!r}")
    return v


def existing_file(s: str) -> str:
    """A path to a file that exists."""
    p = Path(s)
    if p.is_dir():
        raise argparse.ArgumentTypeError(f"{s!r} is a folder; pass a file")
    if not p.is_file():
        raise argparse.ArgumentTypeError(f"file {s!r} not found")
    return s


def existing_dir(s: str) -> str:
    """A path to a folder that exists."""
    p = Path(s)
    if p.exists() and not p.is_dir():
        raise argparse.ArgumentTypeError(f"{s!r} is a file; pass a folder")
    if not p.is_dir():
        raise argparse.ArgumentTypeError(f"folder {s!r} not found")
    return s


def existing_path(s: str) -> str:
    """A file or folder that exists."""
    if not Path(s).exists():
        raise argparse.ArgumentTypeError(f"{s!r} not found")
    return s


def key_value(s: str) -> tuple[str, object]:
    """KEY=VALUE with a YAML value: depth=3, act=mish, partial_ratio=0.25, stage_depths=[1,2,8,8,4]."""
    import yaml

    key, sep, value = s.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. act=mish), got {s!r}")
    try:
        return key, yaml.safe_load(value)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(
            f"cannot read the value of {s!r}; write KEY=VALUE with a plain value"
        ) from None


def add_output(
    parser: argparse.ArgumentParser,
    *flags: str,
    kind: str = "file",
    force: str = "--force",
    inputs: tuple[str, ...] = (),
    **kwargs,
) -> argparse.Action:
    """An output argument (kind "file" or "dir") that may not exist unless `force` is given.

    `force` ("--force" or "--exist-ok") is added to the parser unless it has it already. `inputs` names other
    arguments (dests) the output may never be, not even with `force`. The check runs in check_outputs(args).
    """
    if kind not in ("file", "dir"):
        raise ValueError(f"kind must be 'file' or 'dir', not {kind!r}")
    action = parser.add_argument(*flags, **kwargs)
    force_dest = force.lstrip("-").replace("-", "_")
    if not any(force in a.option_strings for a in parser._actions):
        what = "file" if kind == "file" else "folder"
        parser.add_argument(force, action="store_true", help=f"write into an existing output {what}")
    checks = list(parser.get_default(OUTPUTS) or [])
    checks.append(
        (
            action.dest,
            action.option_strings[0] if action.option_strings else action.dest,
            kind,
            force,
            force_dest,
            inputs,
        )
    )
    parser.set_defaults(**{OUTPUTS: checks})
    return action


def check_output(
    path: str | Path, kind: str = "file", force: bool = False, flag: str = "--force", what: str = "output"
) -> None:
    """Raise ConfigError when `path` cannot be written as a `kind` output (exists without `force`, wrong type)."""
    p = Path(path)
    if kind == "file":
        if p.is_dir():
            raise ConfigError(f"{what} {str(p)!r} is a folder; pass a file path")
        if p.exists() and not force:
            raise ConfigError(f"{what} {str(p)!r} exists; pass {flag} to overwrite it, or another path")
    else:
        if p.exists() and not p.is_dir():
            raise ConfigError(f"{what} {str(p)!r} is a file; pass a folder path")
        if p.is_dir() and not force:
            raise ConfigError(f"{what} folder {str(p)!r} exists; pass {flag} to write into it, or another path")
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise ConfigError(f"{what} {str(p)!r}: {str(parent)!r} is a file, not a folder")


def _same(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and a.samefile(b)
    except OSError:
        return False


def check_outputs(args: argparse.Namespace) -> None:
    """The checks add_output registered for the chosen sub-command (call right after parse_args)."""
    for dest, flag, kind, force, force_dest, inputs in getattr(args, OUTPUTS, None) or []:
        value = getattr(args, dest, None)
        if value is None:
            continue
        for other in inputs:
            src = getattr(args, other, None)
            if src is not None and (_same(Path(value), Path(src)) or Path(value).resolve() == Path(src).resolve()):
                raise ConfigError(f"output {value!r} is also the input {other} ({src!r}); pass another output path")
        check_output(
            value,
            kind,
            bool(getattr(args, force_dest, False)),
            force,
            f"output {flag}" if flag.startswith("-") else "output",
        )
