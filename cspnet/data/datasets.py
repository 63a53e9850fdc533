"""Classification datasets laid out as `<root>/<split>/<class>/*.jpg`, in a folder or in a zip archive.

An unreadable image is skipped with a warning that names it: `__getitem__` returns None and `Collate` drops and
counts it, so one bad file never stops a run.
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from cspnet.data.images import load_image
from cspnet.errors import InputError

LOG = logging.getLogger("cspnet.data")

VAL_SPLITS = ("val", "test")  # the first that exists is the validation split


class ImageDataset(Dataset):
    """(image, class index) pairs; subclasses say how a sample's bytes are read."""

    def __init__(self, samples: list[tuple[str, int]], classes: list[str], where: str, transform: Callable | None):
        if not samples:
            raise InputError(f"no images in {where}; expected {where}/<class>/*.jpg")
        self.samples, self.classes, self.where, self.transform = samples, classes, where, transform

    @property
    def targets(self) -> list[int]:
        return [t for _, t in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def read(self, ref: str) -> str | Path | bytes:
        """The sample's file (path or bytes) for load_image."""
        raise NotImplementedError

    def open(self, ref: str) -> Image.Image:
        """The sample as 8-bit RGB (16-bit, palette, alpha, CMYK converted by load_image)."""
        return load_image(self.read(ref))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int] | None:
        ref, target = self.samples[i]
        try:
            img = self.open(ref)
        except Exception as e:  # PIL raises many types for bad files
            LOG.warning(f"skipping unreadable image {self.where}/{ref}: {type(e).__name__}: {e}")
            return None
        return (self.transform(img) if self.transform else img), target

    def subset(self, n: int | None, seed: int = 0) -> ImageDataset:
        """Keep a random n samples (the same ones for a given seed); None keeps all."""
        if n is not None and n < len(self.samples):
            keep = torch.randperm(len(self.samples), generator=torch.Generator().manual_seed(seed))[:n]
            self.samples = [self.samples[i] for i in sorted(keep.tolist())]
        return self


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS)


def _index(paths: list[str]) -> tuple[list[tuple[str, int]], list[str]]:
    """Samples and sorted class names from '<class>/<file>' paths inside a zip."""
    classes = sorted({p.split("/", 1)[0] for p in paths})
    idx = {c: i for i, c in enumerate(classes)}
    return [(p, idx[p.split("/", 1)[0]]) for p in sorted(paths)], classes


class ImageFolderDataset(ImageDataset):
    """`<root>/<class>/*.jpg` on disk, indexed by torchvision's ImageFolder helpers (find_classes, make_dataset)."""

    def __init__(self, root: str | Path, transform: Callable | None = None):
        root = Path(root)
        if not root.is_dir():
            raise InputError(f"split folder {root} not found; expected {root}/<class>/*.jpg")
        try:
            classes, class_to_idx = find_classes(root)
        except FileNotFoundError:
            classes, class_to_idx = [], {}
        samples = make_dataset(root, class_to_idx, IMG_EXTENSIONS, allow_empty=True) if classes else []
        samples = [(Path(p).relative_to(root).as_posix(), t) for p, t in samples]
        super().__init__(samples, classes, str(root), transform)
        self.root = root

    def read(self, ref: str) -> Path:
        return self.root / ref


class ZipImageDataset(ImageDataset):
    """`<split>/<class>/*.jpg` inside a zip, read straight from the archive: one handle per worker process."""

    def __init__(self, path: str | Path, split: str, transform: Callable | None = None):
        self.path, self.split = Path(path), split
        names = [n[len(split) + 1 :] for n in _zip_names(self.path) if n.startswith(split + "/") and _is_image(n)]
        names = [n for n in names if "/" in n]  # images directly under <split>/ have no class
        super().__init__(*_index(names), f"{path}:{split}", transform)
        self._zip: zipfile.ZipFile | None = None
        self._pid = -1

    def read(self, ref: str) -> bytes:
        if self._pid != os.getpid():  # a handle must not cross a fork into DataLoader workers
            self._zip, self._pid = zipfile.ZipFile(self.path), os.getpid()
        return self._zip.read(f"{self.split}/{ref}")

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_zip": None, "_pid": -1}


def _zip_names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as z:
            return z.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        raise InputError(f"cannot read {path} as a zip archive ({e}); pass a folder or a valid .zip") from None


def split_names(data: str | Path) -> list[str]:
    """The top-level folders of a dataset folder or zip."""
    data = Path(data)
    if data.suffix == ".zip" and data.is_file():
        return sorted({n.split("/", 1)[0] for n in _zip_names(data) if "/" in n})
    return sorted(d.name for d in data.iterdir() if d.is_dir()) if data.is_dir() else []


def open_split(data: str | Path, split: str, transform: Callable | None = None) -> ImageDataset:
    """Open one split of a dataset folder or zip. split='val' falls back to 'test' when there is no val/."""
    data = Path(data)
    if not data.exists():
        raise InputError(f"dataset {data} not found; pass a folder or .zip holding <split>/<class>/*.jpg")
    have = split_names(data)
    if split == "val":
        split = next((s for s in VAL_SPLITS if s in have), "val")
    if split not in have:
        raise InputError(
            f"{data} has no {split!r} split (found: {', '.join(have) or 'nothing'}); expected {data}/{split}/<class>/*.jpg"
        )
    if data.suffix == ".zip" and data.is_file():
        return ZipImageDataset(data, split, transform)
    return ImageFolderDataset(data / split, transform)
