"""Shared test fixtures. Data from ../shared is used when present; tests that need it skip otherwise."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# pytest -n 2 runs two workers on two cores: one thread each, or OpenMP spin-waits make both 10x slower
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


def shared_root() -> Path:
    """../shared beside the repo, or $CSPNET_SHARED."""
    return Path(os.environ.get("CSPNET_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared() -> Path:
    root = shared_root()
    if not root.is_dir():
        pytest.skip(f"shared data not found at {root}; set CSPNET_SHARED to its folder to run this test")
    return root


@pytest.fixture(scope="session")
def darknet_dir(shared: Path) -> Path:
    d = shared / "darknet"
    if not d.is_dir():
        pytest.skip(f"{d} missing; the darknet .cfg files live in shared/darknet")
    return d


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield
