"""Fine-tuning from darknet-format weights, as darknet's custom-training recipe does it, in two commands:

    cspnet detect train --model yolov4-tiny --weights yolov4-tiny.conv.29 --data D ...   # the first 29 layers loaded
    cspnet detect val --weights RUN/weights/last.pt --data D --json

Writes docs/results/finetune_darknet.{json,md}: both command lines, the weights file and its sha256, whether the
weights were random, the dataset, epochs, image size, mAP@0.5 and mAP@0.5:0.95 (pycocotools), the training wall
time, the machine and its load average.

    python benchmarks/finetune_darknet.py --weights yolov4-tiny.conv.29 --img 416 --epochs 30   # darknet's file
    python benchmarks/finetune_darknet.py --random-darknet --width 0.25 --img 160 --epochs 6   # offline, CI
    python benchmarks/finetune_darknet.py --tiny --out /tmp/ft.md --project /tmp/runs           # seconds: the test

--weights takes a file or a published name (cspnet/hub.py: downloaded once into $CSPNET_HOME). --random-darknet
writes a darknet file from a freshly initialised model instead (a partial `.conv.N` like the release file, or a
whole 80-class `.weights` with --random-layers 0): what a machine without network can run. Its results are
labelled random everywhere: they show that the pipeline runs, not what darknet's weights give.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import shlex
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RACCOON = REPO.parent / "shared/data/raccoon"


class Tee(io.TextIOBase):
    """Writes to the console and keeps a copy (the training log)."""

    def __init__(self, out) -> None:
        self.out, self.buf = out, io.StringIO()

    def write(self, s: str) -> int:
        self.out.write(s)
        return self.buf.write(s)

    def flush(self) -> None:
        self.out.flush()


def run_cli(argv: list[str], log: Path) -> tuple[str, float]:
    """Run `cspnet ARGV` in this process; its stdout (console and `log`) and wall seconds. Fails on a nonzero exit."""
    from cspnet.cli import main

    print("$ cspnet " + shlex.join(argv), flush=True)
    tee = Tee(sys.stdout)
    t = time.perf_counter()
    with contextlib.redirect_stdout(tee):
        rc = main(argv)
    seconds = time.perf_counter() - t
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(tee.buf.getvalue())
    if rc:
        raise SystemExit(f"cspnet {argv[0]} {argv[1]} failed (exit {rc}); its log: {log}")
    return tee.buf.getvalue(), seconds


def random_darknet(model: str, width: float | None, layers: int, img: int, folder: Path, seed: int) -> Path:
    """A darknet file with random weights: a freshly initialised `model` (80 classes, seeded) written by
    cspnet.interop.darknet.to_darknet; with layers > 0 cut to its first `layers` layers, as `darknet partial` does."""
    import torch

    import cspnet
    from cspnet.interop.darknet import from_darknet, to_darknet, write_weights

    torch.manual_seed(seed)
    src = cspnet.create_model(model, num_classes=80, **({"width": width} if width else {})).eval()
    folder.mkdir(parents=True, exist_ok=True)
    cfg, whole = to_darknet(src, folder / f"random-{model}.cfg", folder / f"random-{model}.weights", img=img)
    if not layers:
        return whole
    return write_weights(
        from_darknet(cfg, whole, native=False), folder / f"random-{model}.conv.{layers}", layers=layers
    )


def table_partial(model: str):
    """The published partial file for `model` (hub table), or None."""
    from cspnet import hub

    return next((w for w in hub.WEIGHTS.values() if w.model == model and w.layers), None)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--weights", help="darknet weights: a file or a published name (yolov4-tiny.conv.29, ...)")
    src.add_argument("--random-darknet", action="store_true", help="write a darknet file with random weights")
    p.add_argument("--random-layers", type=int, help="layers in the random file (default: the published partial "
                   "file's, 29 for yolov4-tiny; 0: a whole 80-class .weights)")  # fmt: skip
    p.add_argument("--model", default="yolov4-tiny")
    p.add_argument("--width", type=float, help="width multiplier (darknet's files are for width 1, the default)")
    p.add_argument("--data", help=f"default {RACCOON} if present, else a `cspnet sample` set")
    p.add_argument("--img", type=int, default=160)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=0.003)
    p.add_argument("--close-mosaic", type=int, default=2)
    p.add_argument("--subset", type=int, help="train on the first N images")
    p.add_argument("--val-subset", type=int, help="validate on the first N images")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--tiny", action="store_true", help="the test's budget: sample data, img 64, 1 epoch, 4 images")
    p.add_argument("--project", default="runs/finetune_darknet", help="run folders")
    p.add_argument("--out", default=str(REPO / "docs/results/finetune_darknet.md"), help="the .md (and .json)")
    p.add_argument("--from-json", help="only write the .md again from a recorded .json (no training)")
    args = p.parse_args(argv)
    if args.tiny:
        args.img, args.epochs, args.subset, args.val_subset, args.batch, args.workers = 64, 1, 4, 4, 4, 0
        args.width = args.width or 0.25
        args.close_mosaic = 0
        args.random_darknet = args.random_darknet or not args.weights
    if not (args.weights or args.random_darknet or args.from_json):
        p.error("pass --weights FILE_OR_NAME (darknet's file) or --random-darknet (random weights, offline)")
    if args.random_layers is None:
        partial = table_partial(args.model)
        args.random_layers = partial.layers if partial else 0
    return args


def dataset(args: argparse.Namespace) -> str:
    if args.data:
        return args.data
    if RACCOON.is_dir() and not args.tiny:
        return str(RACCOON)
    from cspnet.data.sample import make_sample

    sample = Path(args.project) / "sample"
    if not (sample / "detect" / "data.yaml").is_file():
        make_sample(sample)
    return str(sample / "detect" / "data.yaml")


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    out = Path(args.out)
    if args.from_json:
        out.with_suffix(".md").write_text(
            markdown(json.loads(Path(args.from_json).read_text()), Path(args.from_json).name)
        )
        print(f"wrote {out.with_suffix('.md')}")
        return 0
    import torch

    from cspnet import hub
    from cspnet.bench.harness import machine_info
    from cspnet.data.detection import open_detection

    if args.threads:
        torch.set_num_threads(args.threads)
    project = Path(args.project)
    data = dataset(args)
    if args.random_darknet:
        weights = random_darknet(args.model, args.width, args.random_layers, args.img, project / "random", args.seed)
    else:
        weights = hub.resolve(args.weights)  # a published name: downloaded once, its sha256 printed
    entry = None if args.random_darknet else hub.lookup(args.weights) or hub.lookup(weights.name)
    name = f"{args.model}-{'random' if args.random_darknet else 'darknet'}"
    run = project / name
    train = ["detect", "train", "--model", args.model, "--weights", str(weights), "--data", data]
    train += ["--img", str(args.img), "--epochs", str(args.epochs), "--batch", str(args.batch)]
    train += ["--optimizer", "adamw", "--lr", str(args.lr), "--weight-decay", "0.01", "--warmup-epochs", "1"]
    train += ["--close-mosaic", str(args.close_mosaic), "--workers", str(args.workers), "--seed", str(args.seed)]
    train += ["--project", str(project), "--name", name, "--exist-ok"]
    train += ["--width", str(args.width)] if args.width else []
    train += ["--subset", str(args.subset)] if args.subset else []
    train += ["--val-subset", str(args.val_subset)] if args.val_subset else []
    val = ["detect", "val", "--weights", str(run / "weights/last.pt"), "--data", data, "--json", "--workers", "0"]
    val += ["--project", str(run), "--name", "val", "--exist-ok"]

    load_before = os.getloadavg()
    log, train_s = run_cli(train, run / "train.log")
    val_out, val_s = run_cli(val, run / "val.log")
    load_after = os.getloadavg()
    scores = json.loads(next(line for line in val_out.splitlines() if line.startswith("{")))
    with open(run / "results.csv") as f:
        epochs = [{k: int(v) if k == "epoch" else float(v) for k, v in r.items()} for r in csv.DictReader(f)]
    record = {
        "random_weights": args.random_darknet,
        "label": (
            "RANDOM darknet-format weights (written by this benchmark from a freshly initialised model): the mAP "
            "shows that the pipeline runs, not what darknet's weights give"
            if args.random_darknet
            else "darknet-format weights from a file (see weights.sha256 and weights.published_sha256)"
        ),
        "weights": {
            "spec": "--random-darknet" if args.random_darknet else args.weights,
            "file": weights.name,
            "bytes": weights.stat().st_size,
            "sha256": hub.sha256_of(weights),
            "random": args.random_darknet,
            "layers": args.random_layers if args.random_darknet else (entry.layers if entry else None),
            "published_url": entry.url if entry else None,
            "published_sha256": entry.sha256 if entry else None,
            "loaded": [line for line in log.splitlines() if f"{weights.name}: loaded" in line],
        },
        "model": args.model,
        "width": args.width,
        "data": {
            "path": data,
            "train": open_detection(data, "train").summary("train"),
            "val": scores["data"],
            "subset": args.subset,
            "val_subset": args.val_subset,
        },
        "epochs": len(epochs),
        "img": args.img,
        "batch": args.batch,
        "lr": args.lr,
        "close_mosaic": args.close_mosaic,
        "seed": args.seed,
        "map50": scores["map50"],
        "map": scores["map"],
        "val_images_scored": scores["scored"],
        "train_wall_s": train_s,
        "val_wall_s": val_s,
        "per_epoch": epochs,
        "commands": {
            "benchmark": shlex.join(
                ["python", os.path.relpath(__file__), *(argv if argv is not None else sys.argv[1:])]
            ),
            "train": "cspnet " + shlex.join(train),
            "val": "cspnet " + shlex.join(val),
        },
        "logs": {"train": str(run / "train.log"), "val": str(run / "val.log")},
        "machine": machine_info(torch.get_num_threads()),
        "nice": os.nice(0),
        "load_before": load_before,
        "load_after": load_after,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(record, out.with_suffix(".json").name))
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json').name}")
    return 0


def unsteady(r: dict) -> str:
    """A warning when the last epoch scores well below the best one: the number is not a settled result."""
    best = max(r["per_epoch"], key=lambda e: e["val/map50"])
    last = r["per_epoch"][-1]
    if last["val/map50"] >= 0.5 * best["val/map50"]:
        return ""
    return (
        f" Not settled: the best epoch ({best['epoch']}, {best['val/map50']:.3f}) scored far above the last "
        f"({last['val/map50']:.3f}); with {r['epochs']} epochs and one seed the result swings from epoch to epoch."
    )


def release_table() -> list[str]:
    """hub.WEIGHTS as a markdown table: the authors' files, their URLs, and whether a sha256 is pinned."""
    from cspnet import hub

    rows = ["| name | URL | sha256 | cfg | note |", "|---|---|---|---|---|"]
    for w in hub.WEIGHTS.values():
        rows.append(
            f"| `{w.name}` | {w.url or '(none)'} | {f'`{w.sha256}`' if w.sha256 else 'not pinned yet'} "
            f"| `{w.cfg}` | {w.note} |"
        )
    return rows


def markdown(r: dict, json_name: str) -> str:
    w, m = r["weights"], r["machine"]
    width = f" at width {r['width']}" if r["width"] else ""
    if r["random_weights"]:
        title = f"# Fine-tuning {r['model']}{width} from darknet-format weights: RANDOM weights (a pipeline check)"
        what = [
            f"**The weights were random.** No darknet release file was used (the machine that ran this has no "
            f"network): the darknet file fine-tuned from, `{w['file']}`, was written by this benchmark "
            f"(`--random-darknet`) from a freshly initialised {r['model']}{width} (seed {r['seed']}) with "
            "`cspnet.interop.darknet.to_darknet`"
            + (
                f" and cut to its first {w['layers']} layers with `write_weights(..., layers={w['layers']})`, the "
                "layout of darknet's partial release file."
                if w["layers"]
                else "."
            )
            + " The mAP below shows that the pipeline runs end to end (a darknet partial file as `--weights`, "
            "fine-tuning, COCO evaluation); it is in effect training from scratch, and says nothing about what "
            "darknet's own weights give. For that, run the command under *Real weights* with the authors' file.",
        ]
    else:
        title = f"# Fine-tuning {r['model']}{width} from darknet's `{w['file']}`"
        pinned = w["published_sha256"]
        what = [
            f"Weights: `{w['file']}` ({w['bytes'] / 1e6:.1f} MB, sha256 `{w['sha256']}`"
            + (", matching the table's pinned sha256)." if pinned else ", not checked against a published sha256).")
        ]
    lines = [
        title,
        "",
        *what,
        "",
        "What the training log says about the file:",
        "",
        *[f"    {line}" for line in w["loaded"] or ["(no load line found)"]],
        "",
        f"Data: `{r['data']['path']}`. {r['data']['train']}. {r['data']['val']}."
        + (f" Trained on the first {r['data']['subset']} images." if r["data"]["subset"] else "")
        + (
            f" The per-epoch validation during training used the first {r['data']['val_subset']} val images; the "
            "score below, all of them."
            if r["data"]["val_subset"]
            else ""
        ),
        "",
        "| weights | model | img | epochs | batch | mAP@0.5 | mAP@0.5:0.95 | train wall (s) |",
        "|---|---|---|---|---|---|---|---|",
        f"| `{w['file']}`{' (random)' if r['random_weights'] else ''} | {r['model']}{width} | {r['img']} | "
        f"{r['epochs']} | {r['batch']} | {r['map50']:.3f} | {r['map']:.3f} | {r['train_wall_s']:.0f} |",
        "",
        f"mAP: `cspnet detect val` on the last epoch's EMA weights (`last.pt`), pycocotools COCOeval on "
        f"{r['val_images_scored']} val images. AdamW lr {r['lr']}, weight decay 0.01, 1 warm-up epoch, EMA"
        + (f", mosaic closed for the last {r['close_mosaic']} epochs." if r.get("close_mosaic") else "."),
        "",
        "Val mAP@0.5 after each epoch during training (EMA weights; for reference only, no epoch is chosen on the "
        "val set): " + ", ".join(f"{e['val/map50']:.3f}" for e in r["per_epoch"]) + "." + unsteady(r),
        "",
        f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs ({' '.join(m['isa'])}), {m['threads']} torch "
        f"thread{'s' if m['threads'] != 1 else ''}, torch {m['torch']}; niceness {r['nice']}. Shared with other jobs: load average "
        f"{r['load_before'][0]:.1f} before, {r['load_after'][0]:.1f} after, so the wall time is only an order of "
        "magnitude.",
        "",
        "## Commands",
        "",
        "```",
        r["commands"]["benchmark"],
        "```",
        "",
        "which ran",
        "",
        "```",
        r["commands"]["train"],
        r["commands"]["val"],
        "```",
        "",
        "## Real weights",
        "",
        "The authors' release files (`cspnet/hub.py`); `--weights NAME` downloads one into `$CSPNET_HOME` "
        "(default `~/.cache/cspnet`) on first use. **Their sha256 are not verified yet**: the authors publish none, "
        "and the table was written without network access. On first download the sha256 of the file is printed "
        "(`... no published sha256, unverified; its sha256 is ...`) so that it can be checked against the source "
        "and pinned in the table; this benchmark also records the sha256 of the file it used.",
        "",
        *release_table(),
        "",
        "Darknet's recipe for a custom dataset starts yolov4-tiny from `yolov4-tiny.conv.29` (or the COCO "
        "`yolov4-tiny.weights`, whose 80-class output convolutions then stay fresh). The files are for width 1:",
        "",
        "```",
        "python benchmarks/finetune_darknet.py --weights yolov4-tiny.conv.29 --data ../shared/data/raccoon "
        "--img 416 --epochs 30",
        "```",
        "",
        f"Raw numbers, per-epoch rows and the machine: `{json_name}`.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
