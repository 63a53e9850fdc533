"""`cspnet classify train|val|predict`: the classification task's options and its val and predict commands.

`validate` is `val` for Python (`cspnet.Model.val`); `predict` runs `cspnet.engine.predict.Predictor`.
"""

from __future__ import annotations

import argparse
import json

import torch

from cspnet.cli_args import add_output, fraction, image_size, nonneg_float, positive_int
from cspnet.data import ImageDataset
from cspnet.engine.checkpoint import load_model, run_device
from cspnet.engine.cli import add_eval_args
from cspnet.engine.task_registry import TaskSpec, register_task
from cspnet.engine.tasks.classify import ClassifyCfg, ClassifyTask, TopKAccuracy
from cspnet.errors import InputError
from cspnet.io import atomic_write
from cspnet.models.img_size import check_img_size, model_stride


def load_classifier(weights: str) -> tuple[torch.nn.Module, dict]:
    """A trained classifier (EMA weights when present) and its meta (model, classes, img) from a checkpoint."""
    model, meta, _ = load_model(weights, "classify")
    return model, meta


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
    name: str | None = None,
) -> tuple[dict, TopKAccuracy, ImageDataset]:
    """`classify val` for Python: (metrics, the metric with per-class accuracy and confusion, the dataset)."""
    from torch.utils.data import DataLoader

    from cspnet.data import eval_transform, open_split
    from cspnet.engine import dist
    from cspnet.engine.amp import amp_dtype
    from cspnet.engine.evaluation import evaluate

    img = check_img_size(img or meta["img"], model_stride(model))
    task = ClassifyTask(ClassifyCfg(model=meta["model"], data=data, img=img))
    ds = open_split(data, split, eval_transform(img))
    if ds.classes != meta["classes"]:
        raise InputError(
            f"{name or meta['model']} was trained on {len(meta['classes'])} classes, {ds.where} has "
            f"{len(ds.classes)} ({'different names' if len(ds.classes) == len(meta['classes']) else 'another count'}); "
            "fine-tune first with `cspnet classify train --weights W` (it resets the classifier, as "
            "model.reset_classifier(n))"
        )
    loader = DataLoader(ds, batch, num_workers=workers, collate_fn=task.collate(False))
    device = dist.setup(run_device(model, device))
    metric = task.metric(False)
    return evaluate(model, loader, task, metric, device=device, amp=amp_dtype(amp, device)), metric, ds


def cmd_val(args: argparse.Namespace) -> int:
    """top-1, top-5, loss and per-class accuracy of a checkpoint"""
    model, meta = load_classifier(args.weights)
    m, metric, ds = validate(
        model,
        meta,
        args.data,
        split=args.split,
        img=args.img,
        batch=args.batch,
        workers=args.workers,
        device=args.device,
        amp=args.amp,
        name=args.weights,
    )
    per_class, confusion = metric.per_class, metric.confusion
    if args.json:
        out = {k: m[k] for k in ("loss", "top1", "top5", "skipped")} | {"per_class": per_class, "classes": ds.classes}
        print(json.dumps(out))
    else:
        print(f"{meta['model']} on {ds.where} ({len(ds)} images, {m['skipped']} skipped)")
        print(f"top-1 {m['top1']:.2f}%  top-5 {m['top5']:.2f}%  loss {m['loss']:.4f}")
        width = max(len(c) for c in ds.classes)
        print(f"{'class':<{width}}  {'images':>6}  top-1")
        for c, acc, row in zip(ds.classes, per_class, confusion):
            print(f"{c:<{width}}  {sum(row):>6}  {acc:6.2f}")
    if args.confusion:
        from cspnet.engine.plots import plot_confusion

        print(f"confusion matrix: {plot_confusion(confusion, ds.classes, args.confusion)}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """top-k classes of images, folders, globs and videos"""
    from cspnet.engine.predict import Predictor, list_sources

    pred = Predictor.load(
        args.weights, "classify", img=args.img, topk=args.topk, batch=args.batch, fuse=args.fuse, device=args.device
    )
    sources = list_sources(args.images)
    results = []
    for r in pred.stream(sources):
        results.append(r.to_dict())
        print(f"{r.path}{'' if r.frame is None else f' frame {r.frame}'}: {r.summary()}")
    if not results:
        raise InputError(f"none of the {len(sources)} images could be read; pass JPEG/PNG files")
    if pred.skipped:
        print(f"skipped {pred.skipped} unreadable image(s)")
    if args.json:
        atomic_write(args.json, lambda f: f.write(json.dumps(results, indent=2)), "w")
        print(f"wrote {args.json}")
    return 0


def add_train_args(p: argparse.ArgumentParser) -> None:
    c = ClassifyCfg()
    p.add_argument("--model", help="zoo model, e.g. cspresnet50 (see `cspnet models`)")
    p.add_argument("--data", help="folder or .zip holding train/<class>/*.jpg and val/ (or test/)")
    p.add_argument("--img", type=image_size, help=f"training and validation image size (default {c.img})")
    p.add_argument("--small-input", action="store_const", const=True, help="stem without early downsampling (32x32)")
    p.add_argument("--subset", type=positive_int, help="train on a random N training images")
    p.add_argument("--val-subset", type=positive_int, help="validate on a random N images")
    p.add_argument("--scale", type=fraction, help=f"smallest area of the random resized crop (default {c.scale})")
    p.add_argument("--randaugment", action="store_const", const=True)
    p.add_argument("--mixup", type=nonneg_float, help="MixUp alpha (default 0: off)")
    p.add_argument("--cutmix", type=nonneg_float, help="CutMix alpha (default 0: off)")
    p.add_argument("--label-smoothing", type=fraction, help="default 0")
    p.add_argument("--weights", help="initial weights; another class count gets a fresh classifier")


def add_val_args(p: argparse.ArgumentParser) -> None:
    add_eval_args(p, "folder or .zip with <split>/<class>/*.jpg")
    p.add_argument("--split", default="val", help="split folder (val falls back to test)")
    add_output(
        p, "--confusion", default=None, metavar="PNG", help="write a confusion-matrix plot (folders are created)"
    )
    p.add_argument("--json", action="store_true", help="print JSON for scripts")


def add_predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, help="best.pt or last.pt of a classify run")
    p.add_argument("images", nargs="+", help="image files, folders, globs ('imgs/*.jpg'), videos (cspnet[video])")
    p.add_argument("--topk", type=positive_int, default=5)
    p.add_argument("--img", type=image_size, default=None, help="image size (default: the training size)")
    p.add_argument("--batch", type=positive_int, default=1, help="images per forward pass (default 1)")
    p.add_argument("--no-fuse", dest="fuse", action="store_false", help="run the unfused model (same classes, slower)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    add_output(p, "--json", default=None, metavar="OUT", help="also write the results as JSON (folders are created)")


SPEC = register_task(
    TaskSpec(
        name="classify",
        task=ClassifyTask,
        cfg=ClassifyCfg,
        add_train_args=add_train_args,
        resume_safe=("data",),
        add_val_args=add_val_args,
        val=cmd_val,
        add_predict_args=add_predict_args,
        predict=cmd_predict,
        validate=validate,
    )
)
