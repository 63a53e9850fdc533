"""Shared test fixtures. Data from ../shared is used when present; tests that need it skip otherwise."""

from __future__ import annotations

import importlib.util
import os
import re
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def load_benchmark(name: str):
    """A fresh copy of benchmarks/<name>.py as a module (benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


# ---- model helpers shared by test modules (import them from conftest: parametrize needs them at collection) ------
def family(name: str) -> str:
    """'cspresnext50' -> 'resnext': CSP and plain twins share a family."""
    return re.match(r"[a-z]+", name.removeprefix("csp")).group(0)


def smallest_per_family(csp: bool = True) -> list[str]:
    """The zoo model with the fewest MACs in each family (CSP or plain)."""
    from cspnet.models import list_models, model_info

    best: dict[str, str] = {}
    for n in list_models():
        info = model_info(n)
        if info.is_csp != csp:
            continue
        f = family(n)
        if f not in best or (info.gmacs or 0) < (model_info(best[f]).gmacs or 0):
            best[f] = n
    return sorted(best.values())


@torch.no_grad()
def randomized(name: str, seed: int = 0, img: int = 32) -> torch.nn.Module:
    """A model whose BN statistics and affine terms are not the identity, so folding them is really tested."""
    from cspnet.models import create_model
    from cspnet.nn.bn import calibrate_bn

    torch.manual_seed(seed)
    model = create_model(name, num_classes=10)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0.0, 0.2)
        elif isinstance(m, torch.nn.Linear):
            torch.nn.init.normal_(m.weight, 0.0, 0.2)
    calibrate_bn(model, torch.randn(4, 3, img, img))  # real statistics keep eval activations O(1)
    return model.eval()
