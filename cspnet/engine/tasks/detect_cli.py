"""`cspnet detect train|val|predict`: the detection task's options and its val and predict commands.

`train` is the engine's (EMA, AMP, warm-up + cosine, resume, atomic checkpoints, results.csv, TensorBoard, DDP).
`val` prints COCO mAP and writes, into its run folder, the predictions as COCO results JSON beside the ground truth
it was scored against (COCO JSON, whatever format the data came in), a per-class AP table, a PR curve and a
confusion matrix. `predict` draws and lists detections for images, folders, globs and video files
(`cspnet.engine.predict.Predictor`). `validate` is `val` for Python (`cspnet.Model.val`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from cspnet.data.detection import DetSource, open_detection
from cspnet.engine.checkpoint import load_model, run_device
from cspnet.engine.metrics_coco import CocoMetric
from cspnet.engine.task_registry import TaskSpec, register_task
from cspnet.engine.tasks.detect import DetectCfg, DetectTask
from cspnet.errors import InputError
from cspnet.models.img_size import check_img_size, model_stride


def load_detector(weights: str) -> tuple[torch.nn.Module, dict]:
    """A trained detector (EMA weights when saved) and its meta (model, classes, img) from a checkpoint."""
    model, meta, _ = load_model(weights, "detect")
    return model, meta


def _run_folder(args: argparse.Namespace, default: str) -> Path:
    """--project/--name, or the next free default, default2, ... (never overwrites an earlier result)."""
    from cspnet.engine.run import claim_run

    return claim_run(args.project, args.name, args.exist_ok, default).path


def validate(
    model: torch.nn.Module,
    meta: dict,
    data: str,
    *,
    split: str = "val",
    img: int | None = None,
    batch: int = 64,
    workers: int = 2,
    device: str = "auto",
    amp: str = "off",
    conf: float = 0.001,
    iou: float = 0.6,
    max_det: int = 300,
    name: str | None = None,
    verbose: bool = True,
) -> tuple[dict, CocoMetric, DetSource]:
    """`detect val` for Python: (metrics, the CocoMetric with its details, the data source) of a trained detector.
    verbose: print the split's summary line (images, boxes, classes, skipped)."""
    from torch.utils.data import DataLoader

    from cspnet.data.detection_aug import DetectionDataset, detection_collate
    from cspnet.engine import dist
    from cspnet.engine.amp import amp_dtype
    from cspnet.engine.evaluation import evaluate
    from cspnet.engine.samplers import ShardSampler

    img = check_img_size(img or meta["img"], model_stride(model))
    src = open_detection(data, split)
    if src.names != meta["classes"]:
        raise InputError(
            f"{name or meta['model']} detects {len(meta['classes'])} classes, {src.where} has {len(src.names)} "
            f"({'different names' if len(src.names) == len(meta['classes']) else 'another count'}); "
            "fine-tune first with `cspnet detect train --weights W --data D`"
        )
    if dist.is_main() and verbose:
        print(src.summary(split), flush=True)
    ds = DetectionDataset(src, img)
    device = dist.setup(run_device(model, device))
    shard = ShardSampler(len(ds), dist.rank(), dist.world_size())  # under torchrun each rank scores its share
    loader = DataLoader(ds, batch, sampler=shard, num_workers=workers, collate_fn=detection_collate)
    task = DetectTask(DetectCfg(model=meta["model"], data=data, img=img))
    metric = CocoMetric(src, conf=conf, iou=iou, max_det=max_det)
    return evaluate(model, loader, task, metric, device=device, amp=amp_dtype(amp, device)), metric, src


def cmd_val(args: argparse.Namespace) -> int:
    """COCO mAP of a checkpoint, with the predictions and ground truth written as COCO JSON"""
    from cspnet.engine import dist

    model, meta = load_detector(args.weights)
    m, metric, src = validate(
        model,
        meta,
        args.data,
        split=args.split,
        img=args.img,
        batch=args.batch,
        workers=args.workers,
        device=args.device,
        amp=args.amp,
        conf=args.conf,
        iou=args.iou,
        max_det=args.max_det,
        name=args.weights,
        verbose=not args.json,
    )
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
def cmd_predict(args: argparse.Namespace) -> int:
    """detect objects in images, folders, globs and videos; write annotated copies, JSON and YOLO txt results"""
    from cspnet.engine.predict import Predictor, ResultSaver, list_sources

    pred = Predictor.load(
        args.weights,
        "detect",
        img=args.img,
        conf=args.conf,
        iou=args.iou,
        classes=args.classes,
        max_det=args.max_det,
        batch=args.batch,
        fuse=args.fuse,
        device=args.device,
    )
    sources = list_sources(args.source)  # a missing path fails before the run folder is made
    saver = ResultSaver(_run_folder(args, "predict"))
    video, frames = None, 0
    for r in pred.stream(sources):
        saver.add(r)
        if video is not None and r.path != video:
            print(f"{video}: {frames} frames")
            video = None
        if r.frame is None:
            print(f"{r.path}: {r.summary()}")
        else:
            video, frames = r.path, r.frame + 1
    if video is not None:
        print(f"{video}: {frames} frames")
    if not saver.records:
        raise InputError(f"none of the {len(sources)} inputs could be read; pass JPEG/PNG images or videos")
    saver.close()
    print(f"{'skipped ' + str(pred.skipped) + ' unreadable image(s); ' if pred.skipped else ''}results in {saver.out}")
    return 0


# ---- arguments --------------------------------------------------------------------------------------------------------
def add_train_args(p: argparse.ArgumentParser) -> None:
    from cspnet.cli_args import fraction, image_size, nonneg_float, nonneg_int, positive_float, positive_int

    c = DetectCfg()
    p.add_argument("--model", help="detector, e.g. yolov4-tiny (see `cspnet models 'yolo*'`)")
    p.add_argument("--data", help="a YOLO data.yaml, a COCO instances_*.json or a Pascal VOC folder")
    p.add_argument(
        "--img", type=image_size, help=f"training and validation size, a multiple of the stride (default {c.img})"
    )
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
    from cspnet.cli_args import image_size, nonneg_int, positive_int

    p.add_argument("--weights", required=True, help="best.pt or last.pt of a detect run")
    p.add_argument(
        "source", nargs="+", help="images, folders, globs ('imgs/*.jpg'), video files (video needs cspnet[video])"
    )
    p.add_argument("--img", type=image_size, default=None, help="image size (default: the training size)")
    p.add_argument("--classes", type=nonneg_int, nargs="+", default=None, help="keep only these class ids")
    p.add_argument("--batch", type=positive_int, default=1, help="images per forward pass (default 1)")
    p.add_argument("--no-fuse", dest="fuse", action="store_false", help="run the unfused model (same boxes, slower)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
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
        validate=validate,
    )
)
