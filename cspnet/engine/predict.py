"""Inference for detectors and classifiers: sources -> batches -> the fused model -> one `Result` per image.

    pred = Predictor.load("runs/detect/exp/weights/best.pt", conf=0.3, batch=8)
    for r in pred.stream(["photos/", "clip.mp4", "shots/*.jpg"]):
        print(r.path, r.frame, r.boxes, r.scores, r.labels)

Sources: image files, folders (recursively), globs, video files (OpenCV), and in-memory images: PIL images,
numpy arrays (H, W, 3) RGB, tensors (3, H, W) or (N, 3, H, W), uint8 or float in [0, 1]; or a list of these.
Detection letterboxes to the model's size (stride-checked), runs NMS and maps the boxes back to each image's
pixels; classification applies the validation transform and keeps the top-k classes. The model runs fused
(BatchNorm folded; same outputs as unfused) unless `fuse=False`.
"""

from __future__ import annotations

import copy
import glob
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cspnet.data.boxes import postprocess, unletterbox
from cspnet.data.detection import IMG_SUFFIXES
from cspnet.engine.video import VideoWriter, is_video, read_frames, video_fps
from cspnet.errors import ConfigError, InputError
from cspnet.io import atomic_write
from cspnet.models.img_size import check_img_size, model_stride

LOG = logging.getLogger("cspnet.data")


def is_detector(model: nn.Module) -> bool:
    """A YOLO detector, or an exported file of one (its runtime wrapper knows its task)."""
    return getattr(model, "task", None) == "detect" or (hasattr(model, "head") and hasattr(model.head, "decode_boxes"))


def check_classes(classes: Iterable[int] | None, num_classes: int) -> list[int] | None:
    """The class filter, each id checked against the model's class count."""
    if classes is None:
        return None
    classes = [int(c) for c in classes]
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad:
        ids = "0" if num_classes == 1 else f"0-{num_classes - 1}"
        has = f"{num_classes} class{'es' if num_classes != 1 else ''}"
        raise ConfigError(f"--classes {' '.join(map(str, bad))}: the model has {has} ({ids})")
    return classes


# ---- results ----------------------------------------------------------------------------------------------------------
@dataclass
class Result:
    """One image's (or video frame's) prediction. Detection: boxes, scores, classes of each object, best first;
    classification: the top-k classes and their probabilities (boxes None)."""

    task: str  # "detect" or "classify"
    names: list[str]  # the model's class names
    shape: tuple[int, int]  # the original image's (height, width)
    classes: torch.Tensor  # (K,) class ids
    scores: torch.Tensor  # (K,) detection scores or class probabilities
    boxes: torch.Tensor | None = None  # (K, 4) x1, y1, x2, y2 in the original image's pixels
    path: str | None = None  # the file it came from (None: an in-memory image)
    frame: int | None = None  # the frame number in a video
    image: torch.Tensor | None = field(default=None, repr=False)  # the original image, uint8 (3, H, W)

    def __len__(self) -> int:
        return len(self.classes)

    @property
    def labels(self) -> list[str]:
        return [self.names[c] for c in self.classes.tolist()]

    def summary(self) -> str:
        """ "2 person, 1 dog" / "no detections"; classification: "cat 0.912, dog 0.050"."""
        if self.task == "classify":
            return ", ".join(f"{n} {p:.3f}" for n, p in zip(self.labels, self.scores.tolist()))
        counts: dict[str, int] = {}
        for n in self.labels:
            counts[n] = counts.get(n, 0) + 1
        return ", ".join(f"{v} {k}" for k, v in counts.items()) or "no detections"

    def to_dict(self) -> dict:
        """The JSON record `predict` writes (the CLI's predictions.json / --json)."""
        if self.task == "classify":
            top = [{"class": n, "prob": round(p, 6)} for n, p in zip(self.labels, self.scores.tolist())]
            return {"image": self.path, "top": top}
        h, w = self.shape
        rows = [
            {"class": c, "name": self.names[c], "score": round(s, 5), "box": [round(v, 2) for v in b]}
            for b, s, c in zip(self.boxes.tolist(), self.scores.tolist(), self.classes.tolist())
        ]
        frame = {} if self.frame is None else {"frame": self.frame}
        return {"source": self.path, **frame, "width": w, "height": h, "detections": rows}

    def yolo_txt(self) -> str:
        """Detections as YOLO label lines: class cx cy w h score, normalised (YOLO's --save-txt --save-conf)."""
        if self.boxes is None:
            raise ConfigError("YOLO txt is for detections; this is a classification result")
        h, w = self.shape
        lines = [
            f"{c} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f} {s:.5f}"
            for (x1, y1, x2, y2), s, c in zip(self.boxes.tolist(), self.scores.tolist(), self.classes.tolist())
        ]
        return "\n".join(lines) + ("\n" if lines else "")

    def save_txt(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.yolo_txt())
        return path

    def draw(self) -> torch.Tensor:
        """The image with the boxes and labels drawn (classification: the top class written in a corner)."""
        if self.image is None:
            raise ConfigError("this result keeps no image to draw on")
        if self.task == "classify":
            from PIL import Image, ImageDraw

            im = Image.fromarray(self.image.permute(1, 2, 0).numpy())
            if len(self):
                ImageDraw.Draw(im).text((4, 4), f"{self.labels[0]} {float(self.scores[0]):.2f}", fill=(255, 0, 0))
            return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)
        if not len(self):
            return self.image
        from torchvision.utils import draw_bounding_boxes

        labels = [f"{n} {s:.2f}" for n, s in zip(self.labels, self.scores.tolist())]
        width = max(1, round(max(self.shape) / 300))
        return draw_bounding_boxes(self.image, self.boxes, labels, colors="red", width=width)

    def save(self, path: str | Path) -> Path:
        """Write the drawn image (JPEG quality 90 for .jpg)."""
        from PIL import Image

        path = Path(path)
        Image.fromarray(self.draw().permute(1, 2, 0).numpy()).save(path, quality=90)
        return path


# ---- sources ----------------------------------------------------------------------------------------------------------
def list_sources(source: Any) -> list:
    """Paths expanded (folders recursively, globs) into image and video files, in order; in-memory images kept."""
    items = list(source) if isinstance(source, list | tuple) else [source]
    out: list = []
    for s in items:
        if not isinstance(s, str | Path):
            out.append(s)
            continue
        p = Path(s)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.suffix.lower() in IMG_SUFFIXES or is_video(q))
            if not found:
                raise InputError(f"no images or videos in {p}")
            out += found
        elif p.is_file():
            out.append(p)
        elif any(c in str(s) for c in "*?["):
            found = [Path(q) for q in sorted(glob.glob(str(s), recursive=True))]
            if not found:
                raise InputError(f"{s} matches no files")
            out += list_sources([q for q in found if q.is_file() or q.is_dir()])
        else:
            raise InputError(f"{p} not found; pass image files, folders, globs or video files")
    if not out:
        raise InputError("nothing to predict: pass image files, folders, globs, video files or images")
    return out


def to_uint8(image: Any) -> list[torch.Tensor]:
    """An in-memory image (PIL, numpy (H, W[, 3]), tensor (3, H, W) / (N, 3, H, W)) as uint8 RGB (3, H, W) tensors."""
    from PIL import Image

    from cspnet.data.images import to_rgb

    if isinstance(image, Image.Image):
        return [torch.from_numpy(np.asarray(to_rgb(image)).copy()).permute(2, 0, 1)]
    if isinstance(image, np.ndarray):
        a = image[..., None].repeat(3, -1) if image.ndim == 2 else image
        if a.ndim != 3 or a.shape[-1] != 3:
            raise InputError(f"an image array must be (H, W, 3) RGB or (H, W) gray, got shape {image.shape}")
        return to_uint8(torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1))
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.dim() == 4:
            return [x for b in t for x in to_uint8(b)]
        if t.dim() != 3 or t.shape[0] not in (1, 3):
            raise InputError(f"an image tensor must be (3, H, W) or (N, 3, H, W), got {tuple(image.shape)}")
        if t.is_floating_point():
            t = (t * 255).round().clamp(0, 255)
        return [t.to(torch.uint8).expand(3, -1, -1).contiguous()]
    raise InputError(f"cannot predict on a {type(image).__name__}; pass paths, PIL images, arrays or tensors")


# ---- the predictor ----------------------------------------------------------------------------------------------------
def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device cuda requested but CUDA is not available; use --device cpu")
    return torch.device(device)


class Predictor:
    """A model ready to predict: `pred(source) -> list[Result]`, `pred.stream(source)` yields them one by one.

    model/meta: a trained model and its checkpoint meta ("classes", "img"); `Predictor.load(weights)` reads both.
    img: input size (default the training size), a multiple of the model's stride. conf, iou, classes, max_det:
    detection's score threshold, NMS IoU, class filter and cap. topk: classes kept per image (classification).
    batch: images per forward pass. fuse: run the fused model (a fused copy; the model passed in is not changed).
    """

    def __init__(
        self,
        model: nn.Module,
        meta: dict | None = None,
        *,
        img: int | None = None,
        conf: float = 0.25,
        iou: float = 0.45,
        classes: Iterable[int] | None = None,
        max_det: int = 300,
        topk: int = 5,
        batch: int = 1,
        fuse: bool = True,
        device: str | torch.device = "auto",
        _copy: bool = True,
    ):
        meta = meta or {}
        self.task = "detect" if is_detector(model) else "classify"
        n = int(meta.get("num_classes") or getattr(model, "num_classes", 0) or 0)
        self.names = list(meta.get("classes") or [str(i) for i in range(n)])
        size = img or meta.get("img")
        if size is None:
            raise ConfigError("the model records no image size; pass img=")
        self.img = check_img_size(size, model_stride(model))
        self.conf, self.iou, self.max_det, self.topk = conf, iou, max_det, topk
        self.classes = check_classes(classes, len(self.names))
        if batch < 1:
            raise ConfigError(f"batch must be >= 1, got {batch}")
        from cspnet.engine.checkpoint import run_device

        self.batch, self.device = batch, resolve_device(run_device(model, device))
        fuse = fuse and hasattr(model, "fuse")
        if _copy and (fuse or next(model.parameters()).device != self.device):
            model = copy.deepcopy(model)
        model = model.to(self.device).eval()
        self.model = model.fuse() if fuse else model
        self.skipped = 0  # unreadable files in the last stream
        if self.task == "classify":
            from cspnet.data import eval_transform

            self._tf = eval_transform(self.img)

    @classmethod
    def load(cls, weights: str | Path, task: str | None = None, **kw) -> Predictor:
        """A Predictor for a training checkpoint (its EMA weights when saved), built from the checkpoint's meta."""
        from cspnet.engine.checkpoint import load_model

        model, meta, _ = load_model(weights, task)
        return cls(model, meta, **kw, _copy=False)

    def __call__(self, source: Any) -> list[Result]:
        return list(self.stream(source))

    def stream(self, source: Any) -> Iterator[Result]:
        """Results in source order (a video gives one per frame), `batch` images per forward pass."""
        self.skipped = 0
        pending: list[tuple] = []
        for item in self._items(list_sources(source)):
            pending.append(item)
            if len(pending) == self.batch:
                yield from self._run(pending)
                pending = []
        if pending:
            yield from self._run(pending)

    def _items(self, sources: list) -> Iterator[tuple[str | None, int | None, torch.Tensor]]:
        """(path, frame, uint8 image) of every readable image; unreadable files are warned about and counted."""
        from cspnet.data.detection_aug import read_image

        for s in sources:
            if not isinstance(s, Path):
                for im in to_uint8(s):
                    yield None, None, im
            elif is_video(s):
                for i, frame in enumerate(read_frames(s)):
                    yield str(s), i, frame
            else:
                try:
                    im = read_image(str(s)) if self.task == "detect" else self._read_photo(s)
                except Exception as e:  # PIL raises many types for bad files
                    LOG.warning(f"skipping unreadable image {s}: {type(e).__name__}: {e}")
                    self.skipped += 1
                    continue
                yield str(s), None, im

    @staticmethod
    def _read_photo(path: Path) -> torch.Tensor:
        """As classification's datasets read it (EXIF orientation applied)."""
        from cspnet.data import load_image

        return torch.from_numpy(np.asarray(load_image(path)).copy()).permute(2, 0, 1)

    @torch.inference_mode()
    def _run(self, items: list[tuple]) -> list[Result]:
        if self.task == "classify":
            from torchvision.transforms.v2.functional import to_pil_image

            x = torch.stack([self._tf(to_pil_image(im)) for _, _, im in items])  # PIL resize, as validation's
            probs = self.model(x.to(self.device)).float().softmax(1).cpu()
            p, i = probs.topk(min(self.topk, probs.shape[1]), dim=1)
            return [
                Result("classify", self.names, tuple(im.shape[-2:]), c, s, path=path, frame=fr, image=im)
                for (path, fr, im), s, c in zip(items, p, i)
            ]
        from cspnet.data.detection_aug import letterbox, make_sample

        xs, maps = [], []
        for _, _, im in items:
            sample, ratio, pad = letterbox(make_sample(im, torch.zeros(0, 4), torch.zeros(0)), self.img)
            xs.append(sample["image"].as_subclass(torch.Tensor))
            maps.append((ratio, pad))
        x = torch.stack(xs).to(self.device).float() / 255
        dets = postprocess(self.model(x).float(), self.conf, self.iou, self.classes, self.max_det)
        out = []
        for (path, fr, im), det, (ratio, pad) in zip(items, dets, maps):
            det = det.cpu()
            hw = tuple(im.shape[-2:])
            boxes = unletterbox(det[:, :4], ratio, pad, hw)
            out.append(Result("detect", self.names, hw, det[:, 5].long(), det[:, 4], boxes, path, fr, im))
        return out


# ---- saving -----------------------------------------------------------------------------------------------------------
class ResultSaver:
    """A predict run folder: drawn images (<stem>.jpg, a video as <stem>.mp4), YOLO labels/<stem>.txt for detections
    (<stem>_<frame>.txt for video frames), and every record in predictions.json (written by close())."""

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.records: list[dict] = []
        self._stems: dict[str, str] = {}
        self._videos: dict[str, VideoWriter] = {}

    def _stem(self, path: str | None) -> str:
        key = path if path is not None else f"<image {len(self.records)}>"
        if key not in self._stems:
            base = Path(path).stem if path is not None else "image"
            name, i = base, 1
            while name in self._stems.values():
                i += 1
                name = f"{base}_{i}"
            self._stems[key] = name
        return self._stems[key]

    def add(self, r: Result) -> None:
        stem = self._stem(r.path)
        if r.frame is None:
            r.save(self.out / f"{stem}.jpg")
        else:
            if r.path not in self._videos:
                self._videos[r.path] = VideoWriter(self.out / f"{stem}.mp4", video_fps(r.path))
            self._videos[r.path].write(r.draw())
        if r.task == "detect":
            (self.out / "labels").mkdir(exist_ok=True)
            r.save_txt(self.out / "labels" / (f"{stem}.txt" if r.frame is None else f"{stem}_{r.frame}.txt"))
        self.records.append(r.to_dict())

    def close(self) -> Path:
        for v in self._videos.values():
            v.close()
        self._videos.clear()
        path = self.out / "predictions.json"
        atomic_write(path, lambda f: json.dump(self.records, f, indent=1), mode="w")
        return path
