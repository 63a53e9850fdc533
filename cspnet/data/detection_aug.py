"""Detection samples and augmentation on torchvision transforms v2 with tv_tensors.BoundingBoxes.

A sample is a dict {"image": tv_tensors.Image (uint8, 3xHxW), "boxes": BoundingBoxes (XYXY, pixels), "labels"}.
Evaluation letterboxes (resize the long side to `img`, pad to a square with grey 114). Training adds, per sample,
mosaic (4 images on a 2*img canvas, then a random rotation/scale/translation sampled into img x img) or letterbox + random
affine, then HSV jitter and flips; boxes follow every geometric step through v2, and boxes that end up under
2 pixels wide or tall are dropped (SanitizeBoundingBoxes). `close_mosaic()` turns mosaic off for the last epochs.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from cspnet.data.detection import DetSource
from cspnet.data.images import load_image

LOG = logging.getLogger("cspnet.data")
FILL = 114


@dataclass
class AugCfg:
    """Training augmentation (YOLOv5-like defaults); all off gives plain letterbox training."""

    mosaic: float = 1.0  # probability of a 4-image mosaic
    degrees: float = 0.0
    translate: float = 0.1
    scale: float = 0.5  # random scale in [1 - scale, 1 + scale]
    shear: float = 0.0
    hsv_h: float = 0.0  # off by default: torchvision's hue shift costs ~13 ms a 320px image on this CPU
    hsv_s: float = 0.7
    hsv_v: float = 0.4
    fliplr: float = 0.5
    flipud: float = 0.0


def read_image(path: str, long_side: int | None = None, exif: bool = True) -> torch.Tensor:
    """uint8 RGB (3, H, W) of an image file, by cspnet.data.images.load_image (16-bit scaled, grayscale replicated).

    long_side: a JPEG may be decoded at reduced scale (load_image's draft) while its long side stays >= it.
    exif: apply the EXIF orientation, as viewers (and labelling tools) show the image; a record whose boxes were
    drawn on the stored pixels passes False (DetRecord.exif).
    """
    rgb = load_image(path, exif_transpose=exif, long_side=long_side)
    return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1).contiguous()


def make_sample(image: torch.Tensor, boxes, labels) -> dict:
    h, w = image.shape[-2:]
    return {
        "image": tv_tensors.Image(image),
        "boxes": tv_tensors.BoundingBoxes(
            torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4), format="XYXY", canvas_size=(h, w)
        ),
        "labels": torch.as_tensor(labels, dtype=torch.int64).reshape(-1),
    }


def letterbox(sample: dict, size: int, fill: int = FILL) -> tuple[dict, float, tuple[int, int]]:
    """Resize the long side to `size` (aspect kept), pad to size x size around the centre; returns ratio and (left, top)."""
    h, w = sample["image"].shape[-2:]
    r = size / max(h, w)
    nh, nw = max(1, round(h * r)), max(1, round(w * r))
    left, top = (size - nw) // 2, (size - nh) // 2
    out = {k: v for k, v in sample.items()}
    for k in ("image", "boxes"):
        v = F.resize(sample[k], [nh, nw], antialias=True) if (nh, nw) != (h, w) else sample[k]
        out[k] = F.pad(v, [left, top, size - nw - left, size - nh - top], fill=fill if k == "image" else 0)
    return out, r, (left, top)


def resize_long(sample: dict, size: int) -> dict:
    h, w = sample["image"].shape[-2:]
    r = size / max(h, w)
    nh, nw = max(1, round(h * r)), max(1, round(w * r))
    if (nh, nw) == (h, w):
        return sample
    return {
        **sample,
        "image": F.resize(sample["image"], [nh, nw], antialias=True),
        "boxes": F.resize(sample["boxes"], [nh, nw]),
    }


def mosaic4(samples: list[dict], size: int, center: tuple[float, float] | None = None, fill: int = FILL) -> dict:
    """Four samples around a centre (random in [0.5, 1.5] * size) of a 2*size canvas, each resized to long side size."""
    s = size
    xc, yc = center if center is not None else (float(v) for v in (torch.rand(2) * s + 0.5 * s))
    xc, yc = int(xc), int(yc)
    canvas = torch.full((3, 2 * s, 2 * s), fill, dtype=torch.uint8)
    boxes, labels = [], []
    for k, smp in enumerate(samples):
        smp = resize_long(smp, s)
        img = smp["image"]
        h, w = img.shape[-2:]
        # where the image's corner sits on the canvas (top-left, top-right, bottom-left, bottom-right of the centre)
        x0 = xc - w if k in (0, 2) else xc
        y0 = yc - h if k in (0, 1) else yc
        cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x0 + w, 2 * s), min(y0 + h, 2 * s)
        canvas[:, cy0:cy1, cx0:cx1] = img[:, cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
        b = smp["boxes"].as_subclass(torch.Tensor) + torch.tensor([x0, y0, x0, y0], dtype=torch.float32)
        boxes.append(b)
        labels.append(smp["labels"])
    out = make_sample(canvas, torch.cat(boxes), torch.cat(labels))
    out["boxes"] = F.clamp_bounding_boxes(out["boxes"])
    return out


def affine_crop(sample: dict, size: int, cfg: AugCfg, fill: int = FILL) -> dict:
    """Random rotation, scale and translation of a (mosaic) canvas, sampled straight into a size x size output.

    The same as v2.RandomAffine followed by the centre crop, at a quarter of the cost (only the output pixels are
    sampled). Boxes: their four corners mapped and enclosed, then clipped to the output.
    """
    img = sample["image"].as_subclass(torch.Tensor)
    h, w = img.shape[-2:]
    a = math.radians(float(torch.empty(()).uniform_(-cfg.degrees, cfg.degrees))) if cfg.degrees else 0.0
    sc = float(torch.empty(()).uniform_(max(1 - cfg.scale, 0.05), 1 + cfg.scale)) if cfg.scale else 1.0
    tx, ty = (torch.empty(2).uniform_(-cfg.translate, cfg.translate) * size).tolist() if cfg.translate else (0.0, 0.0)
    # forward map: out = sc * R (in - c_in) + c_out + t
    m = sc * torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    c_in, c_out = torch.tensor([w / 2, h / 2]), torch.tensor([size / 2 + tx, size / 2 + ty])
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    src = (torch.stack([xs, ys], -1) - c_out) @ torch.linalg.inv(m).T + c_in  # output pixel centres -> input
    grid = src / torch.tensor([w, h]) * 2 - 1
    out = torch.nn.functional.grid_sample(
        img[None].float() - fill, grid[None], mode="bilinear", padding_mode="zeros", align_corners=False
    )
    out = (out[0] + fill).round().clamp(0, 255).to(torch.uint8)
    b = sample["boxes"].as_subclass(torch.Tensor)
    corners = b[:, [0, 1, 2, 1, 2, 3, 0, 3]].reshape(-1, 4, 2)
    corners = (corners - c_in) @ m.T + c_out
    boxes = torch.cat([corners.amin(1), corners.amax(1)], 1).reshape(-1, 4)
    boxes = boxes.clamp(0, size)
    return make_sample(out, boxes, sample["labels"])


def geometric(cfg: AugCfg, fill: int = FILL) -> v2.Transform:
    """The random affine (rotation, translation, scale, shear) with grey fill."""
    return v2.RandomAffine(
        degrees=cfg.degrees,
        translate=(cfg.translate, cfg.translate) if cfg.translate else None,
        scale=(max(1 - cfg.scale, 0.05), 1 + cfg.scale) if cfg.scale else None,
        shear=cfg.shear or None,
        fill={tv_tensors.Image: fill, "others": 0},
    )


def photometric(cfg: AugCfg) -> v2.Transform:
    """HSV jitter (v2.ColorJitter: value = brightness, saturation, hue) and flips."""
    t = []
    if cfg.hsv_h or cfg.hsv_s or cfg.hsv_v:
        t.append(v2.ColorJitter(brightness=cfg.hsv_v or None, saturation=cfg.hsv_s or None, hue=cfg.hsv_h or None))
    if cfg.fliplr:
        t.append(v2.RandomHorizontalFlip(cfg.fliplr))
    if cfg.flipud:
        t.append(v2.RandomVerticalFlip(cfg.flipud))
    return v2.Compose(t) if t else v2.Identity()


SANITIZE = v2.SanitizeBoundingBoxes(min_size=2)


class DetectionDataset(Dataset):
    """Records of a DetSource as letterboxed (eval) or augmented (train) samples; unreadable images give None."""

    def __init__(self, source: DetSource, img: int, train: bool = False, aug: AugCfg | None = None):
        self.source, self.img, self.train = source, img, train
        self.aug = aug or AugCfg()
        self.mosaic = self.aug.mosaic if train else 0.0
        self.where = source.where
        self._affine = geometric(self.aug)
        self._photo = photometric(self.aug)

    @property
    def names(self) -> list[str]:
        return self.source.names

    def __len__(self) -> int:
        return len(self.source.records)

    def close_mosaic(self) -> None:
        """Plain letterbox + affine from now on (the last epochs train on whole, undistorted images)."""
        self.mosaic = 0.0

    def load(self, i: int) -> dict | None:
        r = self.source.records[i]
        try:
            image = read_image(r.path, long_side=self.img, exif=r.exif)
        except Exception as e:  # PIL raises many types for bad files
            LOG.warning(f"skipping unreadable image {r.path}: {type(e).__name__}: {e}")
            return None
        h, w = image.shape[-2:]
        boxes = torch.from_numpy(r.boxes).float()
        if (w, h) != (r.width, r.height):  # the header said another size (EXIF-less rescale): follow the pixels
            boxes = boxes * torch.tensor([w / r.width, h / r.height] * 2)
        return make_sample(image, boxes, torch.from_numpy(r.classes))

    def __getitem__(self, i: int) -> dict | None:
        sample = self.load(i)
        if sample is None:
            return None
        r = self.source.records[i]
        if not self.train:
            loaded_w = sample["image"].shape[-1]
            sample, ratio, pad = letterbox(sample, self.img)
            ratio *= loaded_w / r.width  # relative to the file's pixels (a JPEG may be decoded at a reduced scale)
            return {
                **sample,
                "index": i,
                "image_id": r.image_id,
                "ratio": ratio,
                "pad": pad,
                "orig": (r.height, r.width),
            }
        if self.mosaic and float(torch.rand(())) < self.mosaic:
            others = []
            while len(others) < 3:
                o = self.load(int(torch.randint(len(self), ())))
                if o is not None:
                    others.append(o)
            sample = mosaic4([sample, *others], self.img)
            sample = affine_crop(sample, self.img, self.aug)
        else:
            sample = self._affine(letterbox(sample, self.img)[0])
        sample = SANITIZE(self._photo(sample))
        return {**sample, "index": i, "image_id": r.image_id, "ratio": 1.0, "pad": (0, 0), "orig": (r.height, r.width)}


def detection_collate(items: list[dict | None]) -> dict:
    """Stack images (uint8), targets (M, 6): image index in the batch, class, x1, y1, x2, y2; drop and count Nones."""
    good = [it for it in items if it is not None]
    if not good:
        return {"images": torch.empty(0), "targets": torch.zeros(0, 6), "skipped": len(items), "meta": []}
    targets = []
    for j, it in enumerate(good):
        b = it["boxes"].as_subclass(torch.Tensor).float()
        t = torch.cat([torch.full((len(b), 1), float(j)), it["labels"].float()[:, None], b], 1)
        targets.append(t)
    meta = [{k: it[k] for k in ("index", "image_id", "ratio", "pad", "orig")} for it in good]
    return {
        "images": torch.stack([it["image"].as_subclass(torch.Tensor) for it in good]),
        "targets": torch.cat(targets),
        "skipped": len(items) - len(good),
        "meta": meta,
    }
