"""Shared test fixtures. Data from ../shared is used when present; tests that need it skip otherwise."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

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


def _make_folder(root: Path, splits=("train", "val"), classes=("a", "b"), n=4, size=8, bad: int = 0) -> Path:
    """root/<split>/<class>/*.jpg with solid colours; `bad` corrupt files in train/<first class>."""
    for split in splits:
        for ci, c in enumerate(classes):
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.new("RGB", (size, size), (200 * ci, 50 + 10 * i, 100)).save(d / f"{i}.jpg")
    for i in range(bad):
        (root / "train" / classes[0] / f"bad{i}.jpg").write_bytes(b"not a jpeg")
    return root


def _zip_folder(folder: Path, path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for f in sorted(folder.rglob("*")):
            z.write(f, f.relative_to(folder).as_posix())
    return path


@pytest.fixture
def make_folder():
    """make_folder(root, splits=, classes=, n=, size=, bad=) -> root: a tiny image-folder dataset of JPEGs."""
    return _make_folder


@pytest.fixture
def zip_folder():
    """zip_folder(folder, path) -> path: the folder as a zip archive."""
    return _zip_folder
