"""Datasets: folders and zips, split fallback, clear errors, unreadable images skipped and counted."""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from cspnet.data import Collate, ZipImageDataset, batch_mix, eval_transform, open_split, train_transform
from cspnet.errors import InputError


def make_folder(root: Path, splits=("train", "val"), classes=("a", "b"), n=4, size=8, bad: int = 0) -> Path:
    """root/<split>/<class>/*.jpg with solid colours; `bad` corrupt files in train/a."""
    for split in splits:
        for ci, c in enumerate(classes):
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.new("RGB", (size, size), (200 * ci, 50 + 10 * i, 100)).save(d / f"{i}.jpg")
    for i in range(bad):
        (root / "train" / classes[0] / f"bad{i}.jpg").write_bytes(b"not a jpeg")
    return root


def zip_folder(folder: Path, path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for f in sorted(folder.rglob("*")):
            z.write(f, f.relative_to(folder).as_posix())
    return path


def test_folder_and_zip_read_the_same(tmp_path):
    folder = make_folder(tmp_path / "ds")
    z = zip_folder(folder, tmp_path / "ds.zip")
    a, b = open_split(folder, "train", eval_transform(8)), open_split(z, "train", eval_transform(8))
    assert isinstance(b, ZipImageDataset)
    assert a.classes == b.classes == ["a", "b"] and len(a) == len(b) == 8
    assert a.targets == b.targets
    torch.testing.assert_close(a[5][0], b[5][0])
    assert a[5][0].shape == (3, 8, 8)


def test_val_falls_back_to_test(tmp_path):
    ds = open_split(make_folder(tmp_path, splits=("train", "test")), "val")
    assert ds.where.endswith("test")


def test_missing_and_empty_splits_are_clear_errors(tmp_path):
    root = make_folder(tmp_path / "ds", splits=("train",))
    with pytest.raises(InputError, match="no 'val' split"):
        open_split(root, "val")
    with pytest.raises(InputError, match="not found"):
        open_split(tmp_path / "nowhere", "train")
    (root / "empty" / "a").mkdir(parents=True)
    with pytest.raises(InputError, match="no images"):
        open_split(root, "empty")
    (tmp_path / "x.zip").write_bytes(b"no zip")
    with pytest.raises(InputError, match="zip"):
        open_split(tmp_path / "x.zip", "train")


def test_unreadable_images_are_skipped_named_and_counted(tmp_path, caplog):
    z = zip_folder(make_folder(tmp_path / "ds", bad=2), tmp_path / "ds.zip")
    ds = open_split(z, "train", eval_transform(8))
    with caplog.at_level(logging.WARNING, logger="cspnet.data"):
        batch = Collate()([ds[i] for i in range(len(ds))])
    assert batch["skipped"] == 2 and len(batch["images"]) == 8
    assert "bad0.jpg" in caplog.text and "bad1.jpg" in caplog.text
    empty = Collate()([None, None])
    assert empty["skipped"] == 2 and len(empty["images"]) == 0


def test_train_transform_and_mix():
    img = Image.new("RGB", (40, 30), (10, 20, 30))
    x = train_transform(32, randaugment=True)(img)
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    mix = batch_mix(10, mixup=0.2, cutmix=1.0)
    xs, ys = mix(torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3]))
    assert ys.shape == (4, 10)
    torch.testing.assert_close(ys.sum(1), torch.ones(4))
    assert batch_mix(10) is None


def test_subset_is_reproducible(tmp_path):
    root = make_folder(tmp_path, n=10)
    a = open_split(root, "train").subset(7, seed=3)
    b = open_split(root, "train").subset(7, seed=3)
    assert len(a) == 7 and a.samples == b.samples


def test_cifar10_zip(shared):
    path = shared / "data" / "cifar10.zip"
    if not path.is_file():
        pytest.skip(f"{path} missing")
    train, test = open_split(path, "train"), open_split(path, "val", eval_transform(32))
    assert (len(train), len(test)) == (50_000, 10_000)
    assert train.classes == test.classes and len(train.classes) == 10
    x, y = test[0]
    assert x.shape == (3, 32, 32) and 0 <= y < 10
