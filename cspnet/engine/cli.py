"""`cspnet classify train|val|predict`: the classification task on the engine, from the command line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

import torch

from cspnet.engine.tasks.classify import ClassifyCfg, ClassifyTask, model_from_meta
from cspnet.engine.trainer import TrainCfg, Trainer
from cspnet.errors import ConfigError, InputError

TASK_FIELDS = {f.name for f in dataclasses.fields(ClassifyCfg)}
TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainCfg)}
RUNTIME = ("workers", "device")  # may change on --resume; everything else comes from the checkpoint


def run_dir(project: str, name: str | None, exist_ok: bool) -> Path:
    """runs/classify/NAME; without a name exp, exp2, exp3, ..."""
    if name:
        d = Path(project) / name
        if d.exists() and not exist_ok:
            raise ConfigError(
                f"run folder {d} exists; pass --resume to continue it, --exist-ok to reuse it, or another --name"
            )
        return d
    for i in range(1, 10_000):
        d = Path(project) / ("exp" if i == 1 else f"exp{i}")
        if not d.exists():
            return d
    raise ConfigError(f"too many runs in {project}; pass --name")


def build_trainer(args: argparse.Namespace) -> tuple[Trainer, str | None]:
    """The Trainer a `classify train` command line asks for, and the checkpoint to resume from (or None)."""
    resume = None
    if args.resume:
        resume = Path(args.resume) if args.resume != "last" else None
        if resume is None:
            if not args.name:
                raise ConfigError("--resume needs --name RUN (or --resume PATH/TO/last.pt)")
            resume = Path(args.project) / args.name / "weights" / "last.pt"
        from cspnet.engine.checkpoint import load_checkpoint

        saved = load_checkpoint(resume)["args"]
        if args.model and args.model != saved["model"]:
            raise InputError(f"{resume} was trained as {saved['model']}, not {args.model}; drop --model to resume it")
        values = {**saved, **{k: getattr(args, k) for k in RUNTIME if getattr(args, k) is not None}}
    else:
        if not args.model or not args.data:
            raise ConfigError("classify train needs --model and --data (or --resume)")
        values = {k: v for k, v in vars(args).items() if k in TASK_FIELDS | TRAIN_FIELDS and v is not None}
        values["save_dir"] = str(run_dir(args.project, args.name, args.exist_ok))
    task_args = {k: v for k, v in values.items() if k in TASK_FIELDS}
    cfg = TrainCfg(**{k: v for k, v in values.items() if k in TRAIN_FIELDS})
    return Trainer(ClassifyTask(ClassifyCfg(**task_args)), cfg), (str(resume) if resume else None)


def _cmd_train(args: argparse.Namespace) -> int:
    trainer, resume = build_trainer(args)
    metrics = trainer.fit(resume=resume)
    if trainer.main:
        print(
            f"done: {trainer.save_dir} ({', '.join(f'{k}={v:.4g}' for k, v in metrics.items() if k.startswith('val/'))})"
        )
    return 0


def load_classifier(weights: str) -> tuple[torch.nn.Module, dict]:
    """A trained classifier (EMA weights when present) and its meta (model, classes, img) from a checkpoint."""
    from cspnet.engine.checkpoint import load_checkpoint
    from cspnet.models.weights import load_into

    ckpt = load_checkpoint(weights)
    meta = ckpt.get("meta")
    if ckpt.get("task") != "classify" or not meta:
        raise InputError(f"{weights} is not a classification checkpoint from `cspnet classify train`")
    model = model_from_meta(meta)
    load_into(model, ckpt["model_ema"] or ckpt["model"], str(weights))
    return model.eval(), meta


def _cmd_val(args: argparse.Namespace) -> int:
    from torch.utils.data import DataLoader

    from cspnet.data import open_split

    model, meta = load_classifier(args.weights)
    img = args.img or meta["img"]
    task = ClassifyTask(ClassifyCfg(model=meta["model"], data=args.data, img=img))
    from cspnet.data import eval_transform

    ds = open_split(args.data, args.split, eval_transform(img))
    if ds.classes != meta["classes"]:
        raise InputError(
            f"{args.weights} was trained on {len(meta['classes'])} classes, {ds.where} has {len(ds.classes)} "
            f"({'different names' if len(ds.classes) == len(meta['classes']) else 'another count'}); fine-tune first "
            "with `cspnet classify train --weights W` (it resets the classifier, as model.reset_classifier(n))"
        )
    loader = DataLoader(ds, args.batch, num_workers=args.workers, collate_fn=task.collate(False))
    trainer = Trainer(
        task, TrainCfg(batch=args.batch, device=args.device or "auto", amp=args.amp, workers=args.workers)
    )
    m = trainer.evaluate(model, loader)
    if args.json:
        print(json.dumps({k: m[k] for k in ("loss", "top1", "top5", "per_class", "skipped")} | {"classes": ds.classes}))
    else:
        print(f"{meta['model']} on {ds.where} ({len(ds)} images, {m['skipped']} skipped)")
        print(f"top-1 {m['top1']:.2f}%  top-5 {m['top5']:.2f}%  loss {m['loss']:.4f}")
        width = max(len(c) for c in ds.classes)
        print(f"{'class':<{width}}  {'images':>6}  top-1")
        for c, acc, row in zip(ds.classes, m["per_class"], m["confusion"]):
            print(f"{c:<{width}}  {sum(row):>6}  {acc:6.2f}")
    if args.confusion:
        from cspnet.engine.plots import plot_confusion

        print(f"confusion matrix: {plot_confusion(m['confusion'], ds.classes, args.confusion)}")
    return 0


@torch.no_grad()
def _cmd_predict(args: argparse.Namespace) -> int:
    from PIL import Image

    from cspnet.data import eval_transform

    model, meta = load_classifier(args.weights)
    tf = eval_transform(args.img or meta["img"])
    results, skipped = [], 0
    for path in args.images:
        try:
            with Image.open(path) as im:
                x = tf(im.convert("RGB"))
        except Exception as e:  # PIL raises many types for bad files
            logging.getLogger("cspnet.data").warning(f"skipping unreadable image {path}: {type(e).__name__}: {e}")
            skipped += 1
            continue
        probs = model(x[None]).softmax(1)[0]
        p, i = probs.topk(min(args.topk, len(probs)))
        top = [{"class": meta["classes"][j], "prob": round(float(q), 6)} for q, j in zip(p, i)]
        results.append({"image": str(path), "top": top})
        print(f"{path}: " + ", ".join(f"{t['class']} {t['prob']:.3f}" for t in top))
    if not results:
        raise InputError(f"none of the {len(args.images)} images could be read; pass JPEG/PNG files")
    if skipped:
        print(f"skipped {skipped} unreadable image(s)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
        print(f"wrote {args.json}")
    return 0


def _train_args(p: argparse.ArgumentParser) -> None:
    d = TrainCfg()
    c = ClassifyCfg()
    p.add_argument("--model", help="zoo model, e.g. cspresnet50 (see `cspnet models`)")
    p.add_argument("--data", help="folder or .zip holding train/<class>/*.jpg and val/ (or test/)")
    p.add_argument("--img", type=int, default=c.img, help="training and validation image size")
    p.add_argument("--small-input", action="store_true", help="stem without early downsampling (32x32 images)")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch", type=int, default=d.batch, help="total batch over all processes")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--optimizer", choices=("sgd", "adamw"), default=d.optimizer)
    p.add_argument("--momentum", type=float, default=d.momentum)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="not applied to norms and biases")
    p.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs)
    p.add_argument("--min-lr", type=float, default=d.min_lr, help="final lr as a fraction of --lr (cosine)")
    p.add_argument(
        "--amp", choices=("auto", "off", "bf16", "fp16"), default=d.amp, help="auto: fp16 on CUDA, off on CPU"
    )
    p.add_argument("--no-ema", dest="ema", action="store_false", help="no EMA of the weights")
    p.add_argument("--ema-decay", type=float, default=d.ema_decay)
    p.add_argument("--accumulate", type=int, default=d.accumulate, help="batches per optimizer step")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--deterministic", action="store_true", help="deterministic algorithms (exact resume)")
    p.add_argument("--workers", type=int, default=None, help=f"data loader processes (default {d.workers})")
    p.add_argument("--device", default=None, help="auto, cpu, cuda (default auto)")
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm under torchrun (CUDA only)")
    p.add_argument("--subset", type=int, default=None, help="train on a random N training images")
    p.add_argument("--val-subset", type=int, default=None, help="validate on a random N images")
    p.add_argument("--scale", type=float, default=c.scale, help="smallest area of the random resized crop")
    p.add_argument("--randaugment", action="store_true")
    p.add_argument("--mixup", type=float, default=c.mixup, help="MixUp alpha (0: off)")
    p.add_argument("--cutmix", type=float, default=c.cutmix, help="CutMix alpha (0: off)")
    p.add_argument("--label-smoothing", type=float, default=c.label_smoothing)
    p.add_argument("--weights", default=None, help="initial weights; another class count gets a fresh classifier")
    p.add_argument("--project", default="runs/classify")
    p.add_argument("--name", default=None, help="run folder name under --project (default exp, exp2, ...)")
    p.add_argument("--exist-ok", action="store_true", help="reuse an existing run folder")
    p.add_argument("--resume", nargs="?", const="last", default=None, help="continue --name's last.pt, or PATH")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("classify", help="train, validate and predict image classifiers")
    tsub = p.add_subparsers(dest="action", required=True)

    t = tsub.add_parser("train", help="train a zoo model (also under torchrun --nproc_per_node N)")
    _train_args(t)
    t.set_defaults(func=_cmd_train)

    v = tsub.add_parser("val", help="top-1, top-5, loss and per-class accuracy of a checkpoint")
    v.add_argument("--weights", required=True, help="best.pt or last.pt of a classify run")
    v.add_argument("--data", required=True, help="folder or .zip with <split>/<class>/*.jpg")
    v.add_argument("--split", default="val", help="split folder (val falls back to test)")
    v.add_argument("--img", type=int, default=None, help="image size (default: the training size)")
    v.add_argument("--batch", type=int, default=64)
    v.add_argument("--workers", type=int, default=2)
    v.add_argument("--device", default=None)
    v.add_argument("--amp", choices=("auto", "off", "bf16", "fp16"), default="off")
    v.add_argument("--confusion", default=None, metavar="PNG", help="write a confusion-matrix plot")
    v.add_argument("--json", action="store_true", help="print JSON for scripts")
    v.set_defaults(func=_cmd_val)

    r = tsub.add_parser("predict", help="top-k classes of images")
    r.add_argument("--weights", required=True)
    r.add_argument("images", nargs="+", help="image files")
    r.add_argument("--topk", type=int, default=5)
    r.add_argument("--img", type=int, default=None)
    r.add_argument("--json", default=None, metavar="OUT", help="also write the results as JSON")
    r.set_defaults(func=_cmd_predict)
