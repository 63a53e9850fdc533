"""`cspnet detect train|val|predict`: the detection task's options and its val and predict commands.

`train` is the engine's (EMA, AMP, warm-up + cosine, resume, atomic checkpoints, results.csv, TensorBoard, DDP).
`val` prints COCO mAP and writes, into its run folder, the predictions as COCO results JSON beside the ground truth
it was scored against (COCO JSON, whatever format the data came in), a per-class AP table, a PR curve and a
confusion matrix. `predict` draws and lists detections for images, folders and video files.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from cspnet.data.boxes import postprocess, unletterbox
from cspnet.data.detection import IMG_SUFFIXES, open_detection
from cspnet.engine.checkpoint import load_model
from cspnet.engine.task_registry import TaskSpec, register_task
from cspnet.engine.tasks.detect import DetectCfg, DetectTask
from cspnet.errors import InputError
from cspnet.io import atomic_write

LOG = logging.getLogger("cspnet.data")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


def load_detector(weights: str) -> tuple[torch.nn.Module, dict]:
    """A trained detector (EMA weights when saved) and its meta (model, classes, img) from a checkpoint."""
    model, meta, _ = load_model(weights, "detect")
    return model, meta


def _run_folder(args: argparse.Namespace, default: str) -> Path:
    """--project/--name, or the next free default, default2, ... (never overwrites an earlier result)."""
    from cspnet.engine.run import claim_run

    name = args.name
    if not name:
        taken = Path(args.project)
        name = next(n for i in range(1, 10_000) if not (taken / (n := default if i == 1 else f"{default}{i}")).exists())
    return claim_run(args.project, name, args.exist_ok).path


def cmd_val(args: argparse.Namespace) -> int:
    """COCO mAP of a checkpoint, with the predictions and ground truth written as COCO JSON"""
    from torch.utils.data import DataLoader

    from cspnet.data.detection_aug import DetectionDataset, detection_collate
    from cspnet.engine import dist
    from cspnet.engine.amp import amp_dtype
    from cspnet.engine.evaluation import evaluate
    from cspnet.engine.metrics_coco import CocoMetric
    from cspnet.engine.samplers import ShardSampler

    model, meta = load_detector(args.weights)
    img = args.img or meta["img"]
    src = open_detection(args.data, args.split)
    if src.names != meta["classes"]:
        raise InputError(
            f"{args.weights} detects {len(meta['classes'])} classes, {src.where} has {len(src.names)} "
            f"({'different names' if len(src.names) == len(meta['classes']) else 'another count'}); "
            "fine-tune first with `cspnet detect train --weights W --data D`"
        )
    if dist.is_main() and not args.json:
        print(src.summary(args.split), flush=True)
    ds = DetectionDataset(src, img)
    device = dist.setup(args.device)
    shard = ShardSampler(len(ds), dist.rank(), dist.world_size())  # under torchrun each rank scores its share
    loader = DataLoader(ds, args.batch, sampler=shard, num_workers=args.workers, collate_fn=detection_collate)
    task = DetectTask(DetectCfg(model=meta["model"], data=args.data, img=img))
    metric = CocoMetric(src, conf=args.conf, iou=args.iou, max_det=args.max_det)
    m = evaluate(model, loader, task, metric, device=device, amp=amp_dtype(args.amp, device))
    if not dist.is_main():
        return 0
    out = _run_folder(args, "val")
    paths = metric.write(out)
    per_class = metric.details["per_class"]
    # skipped when the data was read (bad labels, unreadable headers) and when decoding (truncated files)
    skipped = sum(src.skipped.values()) + m["skipped"]
    images = len(src.records) + sum(src.skipped.values())
    if args.json:
        print(
            json.dumps(
                {
                    "map50": m["map50"],
                    "map": m["map"],
                    "loss": m.get("loss"),
                    "images": images,
                    "scored": images - skipped,
                    "skipped": skipped,
                    "data": src.summary(args.split),
                }
            )
        )
    else:
        print(f"{meta['model']} on {src.where} ({images} images: {images - skipped} scored, {skipped} skipped)")
        print(metric.details["summary"].rstrip())
        print(f"mAP@0.5 {m['map50']:.4f}  mAP@0.5:0.95 {m['map']:.4f}")
        if per_class:
            width = max(len(n) for n, _, _ in per_class)
            print(f"{'class':<{width}}  AP@0.5  AP@0.5:0.95")
            for n, a50, a in per_class:
                print(f"{n:<{width}}  {a50:6.3f}  {a:11.3f}")
    print(
        f"wrote {paths['predictions']} and {paths['ground_truth'].name} (COCOeval them), per-class AP, plots in {out}"
    )
    return 0


# ---- predict ----------------------------------------------------------------------------------------------------------
def _sources(paths: list[Path]) -> list[Path]:
    out = []
    for p in paths:
        if p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.suffix.lower() in IMG_SUFFIXES + VIDEO_SUFFIXES)
        elif p.is_file():
            out.append(p)
        else:
            raise InputError(f"{p} not found; pass image files, folders or video files")
    if not out:
        raise InputError(f"no images or videos in {', '.join(map(str, paths))}")
    return out


def _cv2():
    try:
        import cv2
    except ImportError:
        raise InputError("video input needs OpenCV: pip install 'cspnet[video]' (opencv-python-headless)") from None
    return cv2


class Predictor:
    """Letterbox, run, NMS, map back: detections (K, 6) x1, y1, x2, y2, score, class in the image's pixels."""

    def __init__(self, model: torch.nn.Module, meta: dict, args: argparse.Namespace):
        self.model, self.meta, self.args = model, meta, args
        self.img = args.img or meta["img"]
        stride = max(model.head.strides)
        self.img = max(stride, -(-self.img // stride) * stride)

    @torch.no_grad()
    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        from cspnet.data.detection_aug import letterbox, make_sample

        h, w = image.shape[-2:]
        sample, ratio, pad = letterbox(make_sample(image, torch.zeros(0, 4), torch.zeros(0)), self.img)
        x = sample["image"].as_subclass(torch.Tensor)[None].float() / 255
        a = self.args
        det = postprocess(self.model(x), a.conf, a.iou, a.classes, a.max_det)[0]
        det[:, :4] = unletterbox(det[:, :4], ratio, pad, (h, w))
        return det

    def rows(self, det: torch.Tensor) -> list[dict]:
        names = self.meta["classes"]
        return [
            {"class": int(c), "name": names[int(c)], "score": round(float(s), 5), "box": [round(v, 2) for v in b]}
            for b, s, c in zip(det[:, :4].tolist(), det[:, 4].tolist(), det[:, 5].tolist())
        ]

    def draw(self, image: torch.Tensor, det: torch.Tensor) -> torch.Tensor:
        from torchvision.utils import draw_bounding_boxes

        if not len(det):
            return image
        names = self.meta["classes"]
        labels = [f"{names[int(c)]} {s:.2f}" for s, c in zip(det[:, 4].tolist(), det[:, 5].tolist())]
        width = max(1, round(max(image.shape[-2:]) / 300))
        return draw_bounding_boxes(image, det[:, :4], labels, colors="red", width=width)


def _yolo_txt(det: torch.Tensor, h: int, w: int) -> str:
    """class cx cy w h score, normalised (YOLO's --save-txt --save-conf)."""
    lines = []
    for (x1, y1, x2, y2), s, c in zip(det[:, :4].tolist(), det[:, 4].tolist(), det[:, 5].tolist()):
        lines.append(
            f"{int(c)} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f} {s:.5f}"
        )
    return "\n".join(lines) + ("\n" if lines else "")


def cmd_predict(args: argparse.Namespace) -> int:
    """detect objects in images, folders and videos; write annotated copies, JSON and YOLO txt results"""
    from PIL import Image

    from cspnet.data.detection_aug import read_image

    model, meta = load_detector(args.weights)
    pred = Predictor(model, meta, args)
    files = _sources(args.source)
    out = _run_folder(args, "predict")
    (out / "labels").mkdir(exist_ok=True)
    results, used, skipped = [], set(), 0

    def unique(stem: str) -> str:
        name, i = stem, 1
        while name in used:
            i += 1
            name = f"{stem}_{i}"
        used.add(name)
        return name

    for path in files:
        if path.suffix.lower() in VIDEO_SUFFIXES:
            n = _predict_video(path, out, unique(path.stem), pred, results)
            print(f"{path}: {n} frames")
            continue
        try:
            image = read_image(str(path))
        except Exception as e:  # PIL raises many types for bad files
            LOG.warning(f"skipping unreadable image {path}: {type(e).__name__}: {e}")
            skipped += 1
            continue
        det = pred(image)
        stem = unique(path.stem)
        h, w = image.shape[-2:]
        Image.fromarray(pred.draw(image, det).permute(1, 2, 0).numpy()).save(out / f"{stem}.jpg", quality=90)
        (out / "labels" / f"{stem}.txt").write_text(_yolo_txt(det, h, w))
        results.append({"source": str(path), "width": w, "height": h, "detections": pred.rows(det)})
        counts: dict[str, int] = {}
        for r in results[-1]["detections"]:
            counts[r["name"]] = counts.get(r["name"], 0) + 1
        print(f"{path}: " + (", ".join(f"{v} {k}" for k, v in counts.items()) or "no detections"))
    if not results:
        raise InputError(f"none of the {len(files)} inputs could be read; pass JPEG/PNG images or videos")
    atomic_write(out / "predictions.json", lambda f: json.dump(results, f, indent=1), mode="w")
    print(f"{'skipped ' + str(skipped) + ' unreadable image(s); ' if skipped else ''}results in {out}")
    return 0


def _predict_video(path: Path, out: Path, stem: str, pred: Predictor, results: list[dict]) -> int:
    cv2 = _cv2()
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise InputError(f"cannot open video {path}; is it a video file OpenCV can read?")
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    writer, frame_no = None, 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            image = torch.from_numpy(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)).permute(2, 0, 1).contiguous()
            det = pred(image)
            h, w = image.shape[-2:]
            if writer is None:
                writer = cv2.VideoWriter(str(out / f"{stem}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
            drawn = pred.draw(image, det).permute(1, 2, 0).numpy()
            writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
            (out / "labels" / f"{stem}_{frame_no}.txt").write_text(_yolo_txt(det, h, w))
            results.append(
                {"source": str(path), "frame": frame_no, "width": w, "height": h, "detections": pred.rows(det)}
            )
            frame_no += 1
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    if frame_no == 0:
        raise InputError(f"no frames could be read from {path}")
    return frame_no


# ---- arguments --------------------------------------------------------------------------------------------------------
def add_train_args(p: argparse.ArgumentParser) -> None:
    from cspnet.cli_args import fraction, image_size_multiple, nonneg_float, nonneg_int, positive_float, positive_int

    c = DetectCfg()
    p.add_argument("--model", help="detector, e.g. yolov4-tiny (see `cspnet models 'yolo*'`)")
    p.add_argument("--data", help="a YOLO data.yaml, a COCO instances_*.json or a Pascal VOC folder")
    p.add_argument("--img", type=image_size_multiple(32), help=f"training and validation size (default {c.img})")
    p.add_argument(
        "--weights",
        help="initial weights: a checkpoint, .safetensors, darknet .weights (also partial, e.g. yolov4-tiny.conv.29) "
        "or a published name (yolov4-tiny, yolov4-tiny.conv.29: downloaded once into $CSPNET_HOME); another class "
        "count keeps fresh prediction layers",
    )
    p.add_argument(
        "--backbone-weights",
        help="classification weights for the backbone only: 'timm' (timm's ImageNet weights) or a file",
    )
    p.add_argument("--width", type=positive_float, help="model width multiplier (e.g. 0.25 for a CPU-sized model)")
    p.add_argument("--depth", type=positive_float, help="model depth multiplier")
    p.add_argument("--backbone", help="another zoo backbone under the same neck and head, e.g. darknet53")
    p.add_argument(
        "--auto-anchors", action="store_const", const=True, help="k-means anchors from the training boxes (saved)"
    )
    p.add_argument("--subset", type=positive_int, help="train on the first N training images (sorted by path)")
    p.add_argument("--val-subset", type=positive_int, help="validate on the first N images")
    p.add_argument("--val-split", help=f"split validated each epoch (default {c.val_split})")
    p.add_argument("--mosaic", type=fraction, help=f"mosaic probability (default {c.aug.mosaic})")
    p.add_argument("--close-mosaic", type=nonneg_int, help=f"last epochs without mosaic (default {c.close_mosaic})")
    p.add_argument("--degrees", type=nonneg_float, help=f"random rotation (default {c.aug.degrees})")
    p.add_argument("--translate", type=fraction, help=f"random translation (default {c.aug.translate})")
    p.add_argument("--scale", type=fraction, help=f"random scale +- (default {c.aug.scale})")
    p.add_argument("--hsv-h", type=fraction, help=f"hue jitter (default {c.aug.hsv_h}; costs CPU time)")
    p.add_argument("--hsv-s", type=nonneg_float, help=f"saturation jitter (default {c.aug.hsv_s})")
    p.add_argument("--hsv-v", type=fraction, help=f"value (brightness) jitter (default {c.aug.hsv_v})")
    p.add_argument("--fliplr", type=fraction, help=f"horizontal flip probability (default {c.aug.fliplr})")
    p.add_argument("--multi-scale", type=fraction, help="per-batch random size in img * [1 - m, 1 + m] (default 0)")
    p.add_argument("--label-smoothing", type=fraction, help="default 0")
    p.add_argument(
        "--iou-thresh", type=fraction, help=f"extra anchors per object above this IoU (default {c.loss.iou_thresh})"
    )
    p.add_argument("--conf", type=fraction, help=f"validation score threshold (default {c.conf})")
    p.add_argument("--iou", type=fraction, help=f"validation NMS IoU (default {c.iou})")


def _post_args(p: argparse.ArgumentParser, conf: float, iou: float) -> None:
    from cspnet.cli_args import fraction, positive_int

    p.add_argument("--conf", type=fraction, default=conf, help=f"score threshold (default {conf})")
    p.add_argument("--iou", type=fraction, default=iou, help=f"NMS IoU threshold (default {iou})")
    p.add_argument("--max-det", type=positive_int, default=300, help="most detections per image (default 300)")
    p.add_argument("--project", default="runs/detect", help="folder of runs (default runs/detect)")
    p.add_argument("--name", default=None, help="run folder under --project (default val / predict, numbered)")
    p.add_argument("--exist-ok", action="store_true", help="write into an existing --name folder")


def add_val_args(p: argparse.ArgumentParser) -> None:
    from cspnet.engine.cli import add_eval_args

    add_eval_args(p, "a YOLO data.yaml, a COCO instances_*.json or a Pascal VOC folder")
    p.add_argument("--split", default="val", help="split to score (default val)")
    _post_args(p, 0.001, 0.6)
    p.add_argument("--json", action="store_true", help="print the numbers as JSON for scripts")


def add_predict_args(p: argparse.ArgumentParser) -> None:
    from cspnet.cli_args import image_size, nonneg_int

    p.add_argument("--weights", required=True, help="best.pt or last.pt of a detect run")
    p.add_argument("source", nargs="+", type=Path, help="images, folders, video files (video needs cspnet[video])")
    p.add_argument("--img", type=image_size, default=None, help="image size (default: the training size)")
    p.add_argument("--classes", type=nonneg_int, nargs="+", default=None, help="keep only these class ids")
    _post_args(p, 0.25, 0.45)


SPEC = register_task(
    TaskSpec(
        name="detect",
        task=DetectTask,
        cfg=DetectCfg,
        add_train_args=add_train_args,
        train_defaults={
            "lr": 0.01,
            "momentum": 0.937,
            "weight_decay": 5e-4,
            "batch": 16,
            "epochs": 100,
            "warmup_epochs": 3.0,
        },
        resume_safe=("data",),
        add_val_args=add_val_args,
        val=cmd_val,
        add_predict_args=add_predict_args,
        predict=cmd_predict,
    )
)
