"""Ablation studies: a grid of variants of one base model, trained with one recipe and measured with one harness."""

from cspnet.ablate.budgets import BUDGETS, Budget, get_budget
from cspnet.ablate.grid import GridVariant, build_grid
from cspnet.ablate.report import write_report


def __getattr__(name: str):
    # the study brings the training engine and torchvision: loaded on first use, so `cspnet --help` stays light
    if name in ("Study", "StudyCfg", "run_study"):
        from cspnet.ablate import study

        return getattr(study, name)
    raise AttributeError(f"module 'cspnet.ablate' has no attribute {name!r}")


__all__ = [
    "BUDGETS",
    "Budget",
    "GridVariant",
    "Study",
    "StudyCfg",
    "build_grid",
    "get_budget",
    "run_study",
    "write_report",
]
