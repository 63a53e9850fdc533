"""Ablation studies: a grid of variants of one base model, trained with one recipe and measured with one harness."""

from cspnet.ablate.budgets import BUDGETS, Budget, get_budget
from cspnet.ablate.grid import GridVariant, build_grid
from cspnet.ablate.report import write_report
from cspnet.ablate.study import Study, StudyCfg, run_study

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
