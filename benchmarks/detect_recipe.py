"""The detection recipe study of docs/results/protocol.md ("Detection: why yolov4-s trails yolov4-darknet53-s").

screen: every setting of SETTINGS (one factor changed from the raccoon baseline), both twins, 3 seeds, 20 epochs.
plateau: the pair with the recipe chosen from the screen (--recipe, settings joined by ','), on raccoon and coco128,
until the plateau criterion holds or the epoch cap. Each (setting, model, seed) unit writes
docs/results/evidence/detect_recipe/<setting>_<model>_seed<k>.json when it finishes (and commits it with --commit);
a unit whose JSON exists is skipped, so a fresh clone continues run by run; a killed run resumes from its last.pt.

    nohup nice python benchmarks/detect_recipe.py screen --jobs 2 --commit &
    python benchmarks/detect_recipe.py plateau --recipe warmup6,bnmom0.03 --jobs 2 --commit
    python benchmarks/detect_recipe.py report     # detect_recipe.json and .md from the unit JSONs
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS = REPO / "docs" / "results" / "evidence" / "detect_recipe"
PAIR = ("yolov4-s", "yolov4-darknet53-s")  # CSP, plain
SEEDS = 3
DATASETS = {"raccoon": "raccoon", "coco128": "coco128/data.yaml"}  # under --data-root; the screen uses raccoon
# the baseline: detect_raccoon.md's recipe (benchmarks/detect_raccoon.py), fp32 everywhere
BASE_DETECT = {"img": 160, "width": 0.125, "auto_anchors": True, "close_mosaic": 5, "subset": None}
BASE_TRAIN = {"epochs": 20, "batch": 8, "optimizer": "adamw", "lr": 0.003, "weight_decay": 0.01}
BASE_TRAIN |= {"warmup_epochs": 2.0, "amp": "off"}
SETTINGS = {  # one factor each, applied to both twins
    "base": {},
    "warmup6": {"warmup_epochs": 6.0},
    "zerogamma-off": {"zero_gamma": False},
    "bnmom0.03": {"bn_momentum": 0.03},
    "bndecay-on": {"bn_decay": True},
    "lr0.001": {"lr": 0.001},
    "lr0.01": {"lr": 0.01},
}
COSINE, CAP = 50, 100  # plateau stage: cosine to min_lr by epoch COSINE, then held (mosaic closed), at most CAP
WINDOW, PLATEAU_POINTS = 5, 1.0  # |mean of the last WINDOW val mAP@0.5 - mean of the WINDOW before| < 1 point

from cspnet.engine.tasks.detect import DetectTask  # noqa: E402 (after the sys.path line)
from cspnet.io import write_json  # noqa: E402


class RecipeTask(DetectTask):
    """The detect task with the knobs the CLI does not expose; the library's defaults stay as they are."""

    def __init__(self, cfg, zero_gamma: bool = True, bn_momentum: float | None = None, bn_decay: bool = False,
                 stop_at_plateau: bool = False):  # fmt: skip
        super().__init__(cfg)
        self.zero_gamma, self.bn_momentum, self.bn_decay = zero_gamma, bn_momentum, bn_decay
        self.stop_at_plateau = stop_at_plateau

    def build_model(self):
        from torch import nn

        model = super().build_model()
        for m in model.modules():
            if not self.zero_gamma and hasattr(m, "zero_init_last"):  # the BNs its zero_init_last zeroed -> 1
                for bn in m.modules():
                    if isinstance(bn, nn.BatchNorm2d) and not bn.weight.any():
                        nn.init.ones_(bn.weight)
            if self.bn_momentum is not None and isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = self.bn_momentum
        return model

    def param_groups(self, model, weight_decay: float) -> list[dict]:
        if not self.bn_decay:
            return super().param_groups(model, weight_decay)
        from torch import nn

        norm = {
            id(p) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) for p in m.parameters()
        }
        params = [p for p in model.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim > 1 or id(p) in norm]  # conv weights, BN gamma and beta
        rest = [p for p in params if not (p.ndim > 1 or id(p) in norm)]  # conv biases (the head's)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]

    def on_epoch_end(self, trainer, epoch: int, metrics: dict) -> None:
        super().on_epoch_end(trainer, epoch, metrics)
        if self.stop_at_plateau and plateau(curve(rows(Path(trainer.save_dir))), COSINE)["holds"]:
            trainer.stop = True  # the engine ends the run after this epoch's checkpoints


def rows(run: Path) -> list[dict]:
    f = run / "results.csv"
    return list(csv.DictReader(f.open())) if f.is_file() else []


def curve(rs: list[dict], key: str = "val/map50") -> list[float]:
    return [float(r[key]) for r in rs]


def plateau(c: list[float], start: int) -> dict:
    """The protocol's criterion on a val mAP@0.5 curve, once both windows lie after epoch `start`."""
    if len(c) < start + 2 * WINDOW:
        return {"holds": False, "move": None}
    move = 100 * (statistics.fmean(c[-WINDOW:]) - statistics.fmean(c[-2 * WINDOW : -WINDOW]))
    return {"holds": abs(move) < PLATEAU_POINTS, "move": move}


def plateau_name(data: str, mosaic_epochs: int | None = None) -> str:
    """plateau-<data>, or plateau-mosaic<N>-<data> where mosaic closes at epoch N (detection amendment 2)."""
    tag = "" if mosaic_epochs in (None, COSINE) else f"mosaic{mosaic_epochs}-"  # 50: the first stage's own name
    return f"plateau-{tag}{data}"


def parse_plateau(name: str) -> tuple[str, int]:
    """(dataset, the epoch where mosaic closes) of a plateau-stage setting name."""
    rest = name.removeprefix("plateau-")
    if rest.startswith("mosaic"):
        tag, data = rest.split("-", 1)
        return data, int(tag.removeprefix("mosaic"))
    return rest, COSINE


def stage_order(name: str) -> tuple:
    """Table and figure order: the screen's settings, then the plateau stages by dataset, the first stage first."""
    if name in SETTINGS:
        return (0, list(SETTINGS).index(name))
    data, mosaic_until = parse_plateau(name)
    datasets = list(DATASETS)
    return (1, datasets.index(data) if data in datasets else len(datasets), -mosaic_until, name)


def units(
    stage: str, mosaic_epochs: int | None = None, datasets: list[str] | None = None
) -> list[tuple[str, str, int]]:
    """Seed-major: every setting (and dataset) gets seed 0 before any gets seed 1."""
    names = list(SETTINGS) if stage == "screen" else [plateau_name(d, mosaic_epochs) for d in datasets or DATASETS]
    return [(n, m, k) for k in range(SEEDS) for n in names for m in PAIR]


def unit_path(name: str, model: str, seed: int) -> Path:
    return RESULTS / f"{name}_{model}_seed{seed}.json"


def recipe(name: str, chosen: str) -> tuple[dict, dict, dict, str]:
    """(DetectCfg values, TrainCfg values, RecipeTask knobs, dataset) of a unit."""
    knobs = dict(SETTINGS[name]) if name in SETTINGS else {}
    if name.startswith("plateau-"):
        for s in filter(None, chosen.split(",")):
            knobs |= SETTINGS[s]
    train = {**BASE_TRAIN, **{k: v for k, v in knobs.items() if k in BASE_TRAIN}}
    task = {k: v for k, v in knobs.items() if k not in BASE_TRAIN}
    detect = dict(BASE_DETECT)
    if not name.startswith("plateau-"):
        return detect, train, task, "raccoon"
    data, mosaic_until = parse_plateau(name)
    train |= {"epochs": CAP, "cooldown_epochs": CAP - COSINE}
    detect["close_mosaic"] = CAP - mosaic_until
    task["stop_at_plateau"] = True
    return detect, train, task, data


def run_unit(args, name: str, model: str, seed: int) -> None:
    """Train (or resume, or only collect) one unit and write, then commit, its JSON. RunInUse: another lane has it."""
    import torch

    from cspnet.bench.harness import machine_info
    from cspnet.engine.run import RunDir
    from cspnet.engine.tasks.detect import DetectCfg
    from cspnet.engine.tasks.detect_cli import SPEC
    from cspnet.engine.trainer import NonFiniteLossError, TrainCfg, Trainer

    detect, train, knobs, data = recipe(name, args.recipe)
    run = Path(args.project) / name / model / f"seed{seed}"
    cfg = DetectCfg(model=model, data=str(Path(args.data_root) / DATASETS[data]), **detect)
    cfg.val_subset = cfg.subset
    tcfg = TrainCfg(**{**SPEC.train_defaults, **train, "seed": seed, "workers": args.workers, "save_dir": str(run)})
    plateau_at = COSINE if knobs.get("stop_at_plateau") else None
    rs = rows(run)
    t0, epochs0, diverged, device = time.time(), len(rs), False, None
    last = run / "weights" / "last.pt"
    if len(rs) < tcfg.epochs and not (plateau_at and plateau(curve(rs), plateau_at)["holds"]):
        run.mkdir(parents=True, exist_ok=True)
        trainer = Trainer(RecipeTask(cfg, **knobs), tcfg, run=RunDir(run, fresh=not last.is_file()))
        print(f"recipe: {'resuming' if last.is_file() else 'training'} {name} {model} seed {seed} -> {run}", flush=True)
        try:
            trainer.fit(resume=last if last.is_file() else None)
            if trainer.stop:
                print(f"recipe: {name} {model} seed {seed} met the plateau criterion", flush=True)
        except NonFiniteLossError as e:  # a result of the recipe (e.g. too high an lr): recorded, not retried
            print(f"recipe: {name} {model} seed {seed} diverged: {e}", flush=True)
            diverged = True
        device = str(trainer.device)
    rs = rows(run)
    out = {
        "setting": name, "model": model, "seed": seed, "data": data,
        "recipe": {"detect": detect, "train": train, "task": knobs},
        "epochs": len(rs), "curve_map50": curve(rs), "curve_map": curve(rs, "val/map"),
        "final_map50": None if diverged or not rs else curve(rs)[-1],
        "final_map": None if diverged or not rs else curve(rs, "val/map")[-1],
        "diverged": diverged,
        "plateau": plateau(curve(rs), plateau_at) if plateau_at else None,
        "train_img_s_median": statistics.median(curve(rs, "img_s")) if rs else None,
        "wall_s_last_sitting": round(time.time() - t0), "epochs_last_sitting": len(rs) - epochs0,
        "device": device, "gpu": torch.cuda.get_device_name() if device and device.startswith("cuda") else None,
        "machine": machine_info(args.threads),
        "load_note": f"{args.jobs} lane(s) in parallel, {args.threads} torch thread(s) each",
        "command": command(name, args.recipe),
    }  # fmt: skip
    path = unit_path(name, model, seed)
    write_json(path, out)
    print(f"recipe: {name} {model} seed {seed}: mAP@0.5 {out['final_map50']}", flush=True)
    if args.commit:
        report(args)
        subprocess.run([sys.executable, str(REPO / "benchmarks" / "evidence.py")], check=False)  # quotes the base gap
        page = REPO / "docs" / "results" / "evidence.md"
        made = (path, *(RESULTS.with_suffix(x) for x in (".json", ".md", ".png")), page)
        rel = [str(p.relative_to(REPO)) for p in made if p.is_file()]
        msg = f"detect_recipe: {name} {model} seed {seed} ({len(rs)} epochs): mAP@0.5 {out['final_map50']}"
        for _ in range(5):  # lanes commit at once: retry while another holds git's index lock
            subprocess.run(["git", "-C", str(REPO), "add", *rel], check=False)
            git = ["git", "-C", str(REPO), "commit", "-q", "-m", msg, "--only", "--", *rel]
            if subprocess.run(git, check=False).returncode == 0:
                break
            time.sleep(3)


def command(name: str, chosen: str) -> str:
    """The command line that trains this unit's stage."""
    if not name.startswith("plateau-"):
        return "python benchmarks/detect_recipe.py screen"
    data, mosaic_until = parse_plateau(name)
    extra = "" if mosaic_until == COSINE else f" --mosaic-epochs {mosaic_until} --datasets {data}"
    return f"python benchmarks/detect_recipe.py plateau --recipe {chosen}{extra}"


def lane(args) -> None:
    """Take the first unit without a JSON that no other lane holds, until none is left for this lane."""
    import torch

    from cspnet.engine.run import RunInUse

    torch.set_num_threads(args.threads)
    order = [(n, m, int(k)) for n, m, k in (u.split(":") for u in args.units.split(","))]
    while todo := [u for u in order if not unit_path(*u).is_file()]:
        for u in todo:
            try:
                run_unit(args, *u)
                break
            except RunInUse:
                continue
        else:
            return


def start(args) -> None:
    mine = units(args.part, args.mosaic_epochs, args.datasets.split(",") if args.datasets else None)
    for u in mine:  # a committed unit of another --recipe would mix two studies in one table
        path, want = unit_path(*u), dict(zip(("detect", "train", "task"), recipe(u[0], args.recipe), strict=False))
        if path.is_file() and json.loads(path.read_text())["recipe"] != json.loads(json.dumps(want)):
            raise SystemExit(f"{path} was trained with another recipe; pass its --recipe, or move the old units away")
    todo = [u for u in mine if not unit_path(*u).is_file()]
    print(f"recipe: {len(todo)} of {len(mine)} {args.part} units to run", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    argv = [sys.executable, __file__, "lane", "--data-root", args.data_root, "--project", args.project]
    argv += ["--recipe", args.recipe, "--threads", str(args.threads), "--workers", str(args.workers)]
    argv += ["--jobs", str(args.jobs), "--units", ",".join(f"{n}:{m}:{k}" for n, m, k in todo)]
    procs = []
    for _ in range(min(args.jobs, len(todo))):
        procs.append(subprocess.Popen(argv + (["--commit"] if args.commit else []), env=env))
        time.sleep(2)
    sys.exit(max((p.wait() for p in procs), default=0))


def stats(xs: list[float]) -> dict:
    mean = statistics.fmean(xs) if xs else None
    std = statistics.stdev(xs) if len(xs) > 1 else None
    return {"n": len(xs), "mean": mean, "std": std, "se": None if std is None else std / len(xs) ** 0.5}


def diff(a: dict | None, b: dict | None, k: str = "mean") -> dict | None:
    """a[k] - b[k] with SE = sqrt(se_a^2 + se_b^2); None while either lacks an SE (fewer than 2 seeds)."""
    if not a or not b or a["se"] is None or b["se"] is None:
        return None
    return {"delta": a[k] - b[k], "se": (a["se"] ** 2 + b["se"] ** 2) ** 0.5}


def cost() -> dict:
    """MACs and params of each twin as the study trains them (raccoon: one class), cspnet.bench.measure's counts."""
    from cspnet.bench.measure import count_macs, count_params
    from cspnet.models import create_model

    img, width = BASE_DETECT["img"], BASE_DETECT["width"]
    nets = {m: create_model(m, num_classes=1, width=width) for m in PAIR}
    return {"img": img, "width": width, "classes": 1} | {
        m: {"macs": count_macs(net, img), "params": count_params(net)} for m, net in nets.items()
    }


def tail(c: list[float]) -> dict:
    """Where a plateau run was when it stopped, in mAP points: its move over the last 3 epochs, and its mAP at the
    epoch where the lr is held and mosaic closes (COSINE), against its final."""
    out = {"rise_last3": 100 * (c[-1] - c[-4]) if len(c) >= 4 else None}
    return out | {"at_cosine_end": 100 * c[COSINE - 1] if len(c) >= COSINE else None, "final": 100 * c[-1]}


def summary() -> dict:
    """Per setting: each twin's final mAP@0.5 over seeds, the gap, and against `base` the change of the gap and each
    twin's effect, with the protocol's reading (a change beyond 2 SE; the plain twin hurt beyond 2 SE)."""
    runs = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
    out: dict = {"pair": PAIR, "settings": {}, "wall_s_total": sum(r["wall_s_last_sitting"] for r in runs)}
    out["planned"] = {stage: len(units(stage)) for stage in ("screen", "plateau")}
    out["schedule"] = {"cosine_until": COSINE, "cap": CAP, "window": WINDOW, "points": PLATEAU_POINTS}
    out["cost"] = cost()
    for name in sorted({r["setting"] for r in runs}, key=stage_order):
        mine = [r for r in runs if r["setting"] == name]
        s = {m: stats([r["final_map50"] for r in mine if r["model"] == m and not r["diverged"]]) for m in PAIR}
        s["map"] = {m: stats([r["final_map"] for r in mine if r["model"] == m and not r["diverged"]]) for m in PAIR}
        s["diverged"] = [f"{r['model']} seed {r['seed']}" for r in mine if r["diverged"]]
        s["gap"] = diff(s[PAIR[0]], s[PAIR[1]])
        s["plateau"] = {
            f"{r['model']} seed {r['seed']}": r["plateau"] | tail(r["curve_map50"]) for r in mine if r["plateau"]
        }
        s["epochs"] = sorted({r["epochs"] for r in mine})
        s["machine"] = mine[-1].get("machine")
        s["load_notes"] = sorted({r["load_note"] for r in mine if r.get("load_note")})
        if name.startswith("plateau-"):
            s["data"], s["mosaic_until"] = parse_plateau(name)
        out["settings"][name] = s
    base = out["settings"].get("base")
    for name, s in out["settings"].items():
        if base and name in SETTINGS and name != "base":
            s["gap_change"] = diff(s["gap"], base["gap"], "delta")
            s["effect"] = {m: diff(s[m], base[m]) for m in PAIR}
            beyond = lambda d, sign: d is not None and sign * d["delta"] > 2 * d["se"]  # noqa: E731
            s["reading"] = {"gap_changes": beyond(s["gap_change"], 1) or beyond(s["gap_change"], -1),
                            "hurts_plain": beyond(s["effect"][PAIR[1]], -1)}  # fmt: skip
    return out


def pm(d: dict | None, k: str = "mean", e: str = "std") -> str:
    """A figure in mAP points, with its spread when there is one: 54.2 ± 3.1, +4.0 ± 2.2, or –."""
    if not d or d.get(k) is None:
        return "–"
    x = f"{100 * d[k]:+.1f}" if k == "delta" else f"{100 * d[k]:.1f}"
    return x if d.get(e) is None else f"{x} ± {100 * d[e]:.1f}"


def plot(path: Path) -> None:
    """Val mAP@0.5 per epoch of every plateau-stage run, one panel per stage, the twins in two colours."""
    runs = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("plateau-*.json"))]
    if not runs:
        return
    from cspnet.engine.plots import plt, save_figure

    names = sorted({r["setting"] for r in runs}, key=stage_order)
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        data, mosaic_until = parse_plateau(name)
        for r in (r for r in runs if r["setting"] == name):
            c = [100 * x for x in r["curve_map50"]]
            color = "tab:red" if r["model"] == PAIR[0] else "tab:blue"
            ax.plot(range(1, len(c) + 1), c, color=color, alpha=0.8, label=f"{r['model']} seed {r['seed']}")
        ax.axvline(COSINE, color="gray", ls=":", lw=1)  # lr held at 1% from here
        if mosaic_until != COSINE:
            ax.axvline(mosaic_until, color="gray", ls="--", lw=1)
        ax.set(
            xlabel="epoch",
            ylabel="val mAP@0.5 (points), EMA weights",
            title=f"{data}, mosaic until epoch {mosaic_until}",
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(
        f"Detection plateau stages: {PAIR[0]} (CSP) vs {PAIR[1]} (dotted: lr held at 1%; dashed: mosaic closes)"
    )
    save_figure(fig, path, dpi=80)


def report(args) -> None:
    s = summary()
    plot(RESULTS.with_suffix(".png"))
    js = RESULTS.with_suffix(".json")
    write_json(js, s)  # atomic: lanes may report at once
    lines = ["# Detection recipe study: yolov4-s (CSP) against yolov4-darknet53-s (plain)", "",
             "The protocol: [protocol.md](../protocol.md#detection-why-yolov4-s-trails-yolov4-darknet53-s-written-2026-12-07-before-any-of-these-runs). "
             "Val mAP@0.5 (points) of the last epoch's EMA weights, mean ± std over seeds (n); gap = CSP − plain ± SE; "
             "Δgap and the effect on each twin against `base` ± SE. Regenerated by `python benchmarks/detect_recipe.py report`.", "",
             "| setting | epochs | CSP | plain | gap | Δgap vs base | CSP vs base | plain vs base | reading | diverged |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, x in s["settings"].items():
        eff, read = x.get("effect", {}), x.get("reading", {})
        said = [w for w, k in (("gap changes", "gap_changes"), ("hurts plain", "hurts_plain")) if read.get(k)]
        lines.append(
            f"| {name} | {','.join(map(str, x['epochs']))} | {pm(x[PAIR[0]])} ({x[PAIR[0]]['n']}) | "
            f"{pm(x[PAIR[1]])} ({x[PAIR[1]]['n']}) | {pm(x['gap'], 'delta', 'se')} | "
            f"{pm(x.get('gap_change'), 'delta', 'se')} | {pm(eff.get(PAIR[0]), 'delta', 'se')} | "
            f"{pm(eff.get(PAIR[1]), 'delta', 'se')} | {', '.join(said) or '–'} | {', '.join(x['diverged']) or '–'} |"
        )
    for name, x in s["settings"].items():
        if x["plateau"]:
            met = [k for k, p in x["plateau"].items() if p["holds"]]
            lines += ["", f"{name}: the plateau criterion held for {len(met)} of {len(x['plateau'])} runs; moves: "
                      + ", ".join(f"{k} {p['move']:+.2f}" if p["move"] is not None else f"{k} –" for k, p in x["plateau"].items())]  # fmt: skip
    lines += ["", f"Wall time of the sittings that finished the units, summed: {s['wall_s_total']} s; per unit (device, "
              "machine, load) in each JSON under `detect_recipe/`.", ""]  # fmt: skip
    js.with_suffix(".md").write_text("\n".join(lines))
    print(f"wrote {js} and {js.with_suffix('.md')}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", choices=("screen", "plateau", "lane", "report"))
    p.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--recipe", default="", help="plateau: the screen settings to combine, e.g. warmup6,bnmom0.03")
    p.add_argument("--project", default="runs/detect_recipe")
    p.add_argument("--jobs", type=int, default=2, help="parallel lanes")
    p.add_argument("--threads", type=int, default=1, help="torch threads per lane")
    p.add_argument("--workers", type=int, default=1, help="data loader processes per lane")
    p.add_argument("--units", default="", help="lane: setting:model:seed,... (set by screen/plateau)")
    p.add_argument("--commit", action="store_true", help="git commit each unit's JSON when it finishes")
    p.add_argument("--mosaic-epochs", type=int, default=None, help="plateau: mosaic closes at this epoch (default 50)")
    p.add_argument("--datasets", default="", help=f"plateau: datasets, e.g. raccoon (default {','.join(DATASETS)})")
    args = p.parse_args(argv)
    if args.part == "screen" and (args.mosaic_epochs is not None or args.datasets):
        p.error("--mosaic-epochs and --datasets are options of the plateau stage only")
    if args.mosaic_epochs is not None and not 0 <= args.mosaic_epochs <= COSINE:
        p.error(f"--mosaic-epochs must lie in 0..{COSINE} (mosaic closes before the lr is held)")
    bad = [d for d in filter(None, args.datasets.split(",")) if d not in DATASETS]
    if bad:
        p.error(f"unknown --datasets {', '.join(bad)}; known: {', '.join(DATASETS)}")
    unknown = [s for s in filter(None, args.recipe.split(",")) if s not in SETTINGS]
    if unknown:
        p.error(f"unknown --recipe setting {', '.join(unknown)}; known: {', '.join(SETTINGS)}")
    {"screen": start, "plateau": start, "lane": lane, "report": report}[args.part](args)


if __name__ == "__main__":
    main()
