"""Datasets: folders and zips, split fallback, clear errors, unreadable images skipped and counted."""

from __future__ import annotations

import logging

import pytest
import torch
from PIL import Image

from cspnet.data import Collate, ZipImageDataset, batch_mix, eval_transform, open_split, train_transform
from cspnet.errors import InputError


def test_folder_and_zip_read_the_same(tmp_path, make_folder, zip_folder):
    folder = make_folder(tmp_path / "ds")
    z = zip_folder(folder, tmp_path / "ds.zip")
    a, b = open_split(folder, "train", eval_transform(8)), open_split(z, "train", eval_transform(8))
    assert isinstance(b, ZipImageDataset)
    assert a.classes == b.classes == ["a", "b"] and len(a) == len(b) == 8
    assert a.targets == b.targets
    torch.testing.assert_close(a[5][0], b[5][0])
    assert a[5][0].shape == (3, 8, 8)


def test_val_falls_back_to_test(tmp_path, make_folder):
    ds = open_split(make_folder(tmp_path, splits=("train", "test")), "val")
    assert ds.where.endswith("test")


def test_missing_and_empty_splits_are_clear_errors(tmp_path, make_folder):
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


def test_unreadable_images_are_skipped_named_and_counted(tmp_path, caplog, make_folder, zip_folder):
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


def test_subset_is_reproducible(tmp_path, make_folder):
    root = make_folder(tmp_path, n=10)
    a = open_split(root, "train").subset(7, seed=3)
    b = open_split(root, "train").subset(7, seed=3)
    assert len(a) == 7 and a.samples == b.samples


@pytest.mark.slow
def test_cifar10_zip(shared):
    path = shared / "data" / "cifar10.zip"
    if not path.is_file():
        pytest.skip(f"{path} missing")
    train, test = open_split(path, "train"), open_split(path, "val", eval_transform(32))
    assert (len(train), len(test)) == (50_000, 10_000)
    assert train.classes == test.classes and len(train.classes) == 10
    x, y = test[0]
    assert x.shape == (3, 32, 32) and 0 <= y < 10


def _png16(path, values) -> None:
    """A real 16-bit grayscale PNG (PIL writes mode I;16 as 16-bit PNG)."""
    import numpy as np

    Image.fromarray(np.asarray(values, dtype=np.uint16)).save(path)


def test_load_image_decodes_a_large_jpeg_small_and_detection_reads_through_it(tmp_path):
    import numpy as np

    from cspnet.data import load_image
    from cspnet.data.detection_aug import read_image

    Image.new("RGB", (1000, 600), (200, 40, 90)).save(tmp_path / "big.jpg")
    Image.new("RGB", (1000, 600), (200, 40, 90)).save(tmp_path / "big.png")
    assert load_image(tmp_path / "big.jpg").size == (1000, 600)
    assert load_image(tmp_path / "big.jpg", long_side=300).size == (500, 300)  # draft 1/2: 1/4 would be under 300
    assert load_image(tmp_path / "big.jpg", long_side=600).size == (1000, 600)  # 1/2 would be under 600
    assert load_image(tmp_path / "big.png", long_side=300).size == (1000, 600)  # PNG has no draft mode
    x = read_image(str(tmp_path / "big.jpg"), long_side=300)
    assert x.shape == (3, 300, 500) and x.dtype == torch.uint8
    assert np.array_equal(x.permute(1, 2, 0).numpy(), np.asarray(load_image(tmp_path / "big.jpg", False, 300)))


def test_load_image_converts_by_range_not_by_clipping(tmp_path, make_folder):
    import numpy as np

    from cspnet.data import load_image

    ramp = np.linspace(0, 65535, 16 * 16).reshape(16, 16).astype(np.uint16)
    _png16(tmp_path / "ramp16.png", ramp)
    assert Image.open(tmp_path / "ramp16.png").mode.startswith("I")  # a real 16-bit file
    x = np.asarray(load_image(tmp_path / "ramp16.png"))
    assert x.shape == (16, 16, 3) and x.dtype == np.uint8
    np.testing.assert_allclose(x[..., 0], ramp / 257.0, atol=0.51)  # scaled, not clipped to white
    assert (x[..., 0] == x[..., 1]).all() and x.min() == 0 and x.max() == 255

    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 0))  # fully transparent: the hidden colour must not show
    rgba.putpixel((0, 0), (10, 20, 30, 255))
    rgba.save(tmp_path / "a.png")
    y = np.asarray(load_image(tmp_path / "a.png"))
    assert tuple(y[0, 0]) == (10, 20, 30) and tuple(y[1, 1]) == (255, 255, 255)
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    pal.save(tmp_path / "p.png")
    assert tuple(np.asarray(load_image((tmp_path / "p.png").read_bytes()))[0, 0]) == (200, 100, 50)
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(tmp_path / "c.jpg")  # pure red in CMYK
    r, g, b = np.asarray(load_image(tmp_path / "c.jpg"))[0, 0].astype(int)
    assert r > 200 and g < 60 and b < 60
    Image.new("LA", (4, 4), (90, 255)).save(tmp_path / "la.png")
    assert tuple(np.asarray(load_image(tmp_path / "la.png"))[0, 0]) == (90, 90, 90)

    # the datasets read through it: a 16-bit mid-grey image is mid-grey after the transform, not white
    root = make_folder(tmp_path / "ds", n=1)
    _png16(root / "train" / "a" / "grey16.png", np.full((8, 8), 32768))
    ds = open_split(root, "train")
    img, _ = ds[[r for r, _ in ds.samples].index("a/grey16.png")]
    assert np.asarray(img).max() == 128
