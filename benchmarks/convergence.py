"""Does CSP lose accuracy once training has converged? A CSP/plain pair on all of CIFAR-10, several seeds.

The trainings are a `cspnet ablate` study (the engine's classify task, budget `converge`: all 50,000 training
images, 32x32 with the small-input stem, cosine schedule) with the plain model as base and its CSP twin as the grid:
resumable per model and seed, parallel with --jobs on one GPU. This script adds the per-epoch curves
(OUT.json), the plot (OUT.png) and the write-up (OUT.md) with MACs and the CPU latency of the pair.

    python benchmarks/convergence.py --data DATA --device cuda --jobs 4 --parts train   # the GPU box
    python benchmarks/convergence.py --parts measure,report                             # here: CPU latency + docs
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLATEAU_SHARE = 0.2  # the curve's last 20% of epochs: how much top-1 still rose there
PLATEAU_POINTS = 0.5  # a rise above this over those epochs is not a plateau


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pair", nargs=2, default=["cspresnet10", "resnet10"], metavar=("CSP", "PLAIN"))
    p.add_argument("--data", default=None, help="CIFAR-10 folder or zip (needed to train)")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument(
        "--budget",
        default="converge",
        choices=("converge", "converge_cpu"),
        help="converge: a GPU; converge_cpu: a 2-core AMX Xeon in about 1 hour (the usual stem, 1/16 of the MACs)",
    )
    p.add_argument("--epochs", type=int, default=None, help="default: the budget's")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--img", type=int, default=None, help="default 32 (tiny tests only)")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--subset", type=int, default=None, help="training images (default all; tiny tests only)")
    p.add_argument("--val-subset", type=int, default=None)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch threads for the CPU latency")
    p.add_argument("--parts", default=None, help="train,measure,report (default: all; train,report on cuda)")
    p.add_argument("--project", default="runs/convergence")
    p.add_argument("--name", default=None, help="default CSP_vs_PLAIN")
    p.add_argument("--note", default=None, help="a paragraph added to the write-up (e.g. a link to a related study)")
    p.add_argument("--out", default=str(REPO / "docs" / "results" / "convergence"), help="writes OUT.md/.json/.png")
    return p.parse_args(argv)


def ablate_argv(a: argparse.Namespace) -> list[str]:
    csp, plain = a.pair
    argv = ["ablate", "--base", plain, "--grid", f"model={csp}", "--budget", a.budget, "--seeds", str(a.seeds)]
    argv += ["--project", a.project, "--name", a.name, "--jobs", str(a.jobs)]
    for k in ("data", "epochs", "batch", "img", "lr", "subset", "val_subset", "workers", "device", "threads", "parts"):
        v = getattr(a, k)
        if v is not None:
            argv += [f"--{k.replace('_', '-')}", str(v)]
    return argv


def curves(study: Path, slug: str) -> dict[str, list[float]]:
    """seed -> test top-1 per epoch, from the engine's results.csv (also of unfinished runs)."""
    out = {}
    for f in sorted(study.glob(f"{slug}/seed*/results.csv")):
        out[f.parent.name] = [float(r["val/top1"]) for r in csv.DictReader(f.open())]
    return out


def summarize(info: dict, rows: list[dict], study: Path) -> dict:
    models = {}
    for r in rows:
        c = curves(study, r["slug"])
        finals = [v[-1] for v in c.values() if v]
        k = max(1, round(PLATEAU_SHARE * max((len(v) for v in c.values()), default=0)))
        rises = [v[-1] - v[-1 - k] for v in c.values() if len(v) > k]
        models[r["model"]] = {
            "variant": r["variant"],
            "params": r["params"],
            "macs": r["macs"],
            "curves": c,
            "final_top1": finals,
            "final_mean": statistics.fmean(finals) if finals else None,
            "final_std": statistics.stdev(finals) if len(finals) > 1 else None,
            "rise_last_epochs": {"epochs": k, "mean": statistics.fmean(rises) if rises else None},
            "latency_ms": {key: r[f"{key}_ms"] for key in ("b1_fused", "b8_fused", "b1_unfused", "b8_unfused")},
            "latency_vs_plain_pct": {key: r[f"{key}_vs_plain_pct"] for key in ("b1_fused", "b8_fused")},
            "macs_vs_plain_pct": r["macs_vs_plain_pct"],
            "params_vs_plain_pct": r["params_vs_plain_pct"],
            "epochs_planned": info["recipe"]["epochs"],
        }
    return {"recipe": info["recipe"], "data": info.get("data"), "machine": info.get("machine"), "models": models}


def _f(x, fmt: str) -> str:
    return "–" if x is None else format(x, fmt)


def _d(pct: float | None) -> str:
    return "" if pct is None else f" ({pct:+.1f}%)"


def write(a: argparse.Namespace, s: dict, commands: list[str]) -> None:
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    csp, plain = (s["models"].get(m) for m in a.pair)
    rec = s["recipe"]
    done = [m for m in (csp, plain) if m and m["final_top1"]]
    lines = [
        f"# Convergence: {a.pair[0]} vs {a.pair[1]} on {'all of ' if not rec['subset'] else 'part of '}CIFAR-10",
        "",
        "Question: does the CSP model lose accuracy against its plain twin once training has converged (the short "
        "CIFAR-10 benchmark in classify_cifar10.md was far from it)?",
        "",
        f"Recipe, the same for both: {rec['epochs']} epochs on {rec['subset'] or 'all 50,000'} training images, "
        f"test top-1 on {rec['val_subset'] or 'all 10,000'} test images after every epoch (EMA weights), "
        f"{rec['img']}x{rec['img']} input{' with the small-input stem (no early downsampling)' if rec['small_input'] else ''}, "
        f"batch {rec['batch']}, SGD nesterov lr {rec['lr']} (warm-up {rec['warmup_epochs']} epoch, cosine to 1%"
        + (f", the last {rec['cooldown_epochs']} epochs held at 1%" if rec.get("cooldown_epochs") else "")
        + "), "
        f"weight decay {rec['weight_decay']}, random resized crop (scale {rec['scale']}-1) + flip; "
        f"{a.seeds} seeds per model.",
        "",
    ]
    if not done:
        lines += ["**No trainings have finished yet**: run the commands below; this page is generated from them.", ""]
    lines += [
        "| model | params (M) | MMACs (Δ) | CPU b1 fused ms (Δ) | CPU b8 fused ms (Δ) | seeds | final test top-1 % | "
        "rise over the last epochs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in a.pair:
        m = s["models"].get(name)
        if m is None:
            continue
        d = m["latency_vs_plain_pct"] if name != a.pair[1] else {}
        top1 = _f(m["final_mean"], ".2f") + (f" ± {m['final_std']:.2f}" if m["final_std"] is not None else "")
        rise = m["rise_last_epochs"]
        macs_d = m["macs_vs_plain_pct"] if name != a.pair[1] else None
        lines.append(
            f"| {name} | {_f(m['params'] and m['params'] / 1e6, '.3f')} "
            f"| {_f(m['macs'] and m['macs'] / 1e6, '.1f')}{_d(macs_d)} "
            f"| {_f(m['latency_ms']['b1_fused'], '.2f')}{_d(d.get('b1_fused'))} "
            f"| {_f(m['latency_ms']['b8_fused'], '.2f')}{_d(d.get('b8_fused'))} "
            f"| {len(m['final_top1'])} | {top1} | "
            + ("–" if rise["mean"] is None else f"{rise['mean']:+.2f} points in the last {rise['epochs']} epoch(s)")
            + " |"
        )
    lines += ["", f"![test top-1 per epoch]({out.name}.png)", ""]
    if csp and plain and csp["final_mean"] is not None and plain["final_mean"] is not None:
        rises = [m["rise_last_epochs"]["mean"] or 0.0 for m in (csp, plain)]
        diff = csp["final_mean"] - plain["final_mean"]
        noise = max(x for x in (csp["final_std"], plain["final_std"], 0.0) if x is not None)
        verdict = (
            "within the seed-to-seed spread"
            if abs(diff) <= 2 * noise
            else ("CSP is behind" if diff < 0 else "CSP is ahead") + " by more than twice the seed-to-seed spread"
        )
        lines += [
            "## Reading",
            "",
            f"At the end of the schedule {a.pair[0]} scores {diff:+.2f} points against {a.pair[1]} "
            f"({csp['final_mean']:.2f} vs {plain['final_mean']:.2f}, spread up to {noise:.2f} over "
            f"{len(csp['final_top1'])} and {len(plain['final_top1'])} seeds): {verdict}, at "
            f"{_f(csp['macs_vs_plain_pct'], '+.1f')}% MACs and {_f(csp['latency_vs_plain_pct']['b1_fused'], '+.1f')}% "
            "CPU latency (batch 1, fused). "
            f"Top-1 rose by {_f(csp['rise_last_epochs']['mean'], '+.2f')} / {_f(plain['rise_last_epochs']['mean'], '+.2f')} "
            f"points over the last {csp['rise_last_epochs']['epochs']} epoch(s) "
            + (
                f"(at most {PLATEAU_POINTS} points: flattened at the end of this schedule). "
                if max(rises) <= PLATEAU_POINTS
                else f"(more than {PLATEAU_POINTS} points: still rising, NOT a plateau; a longer schedule is needed "
                "before this can be called the converged answer). "
            )
            + (
                f"The last {rec['cooldown_epochs']} epochs ran at the final learning rate (1% of the peak), so that "
                "rise says whether top-1 had stopped moving at this budget; a longer schedule would lift both models, "
                + (
                    "and the gap measured here is the one where both have settled under the same recipe"
                    if max(rises) <= PLATEAU_POINTS
                    else "and the gap measured here is the one at the end of this schedule, before both have settled"
                )
                + ", on this data, not ImageNet."
                if rec.get("cooldown_epochs")
                else "A cosine schedule flattens any curve as the learning rate reaches its floor, so this measures "
                "the gap at the end of one schedule on this data, not ImageNet."
            ),
            "",
        ]
    m = s.get("machine") or {}
    if m:
        lines += [
            f"CPU latency: {m.get('cpu')}, {m.get('threads')} torch threads, ISA {' '.join(m.get('isa', []))}, torch "
            f"{m.get('torch')}, load average before/after {m.get('load_before')} / {m.get('load_after')}; medians of interleaved runs, Δ against the plain twin in the same run.",
            "",
        ]
    epochs = f" --epochs {a.epochs}" if a.epochs else ""
    if rec.get("small_input"):
        ep = rec.get("epochs") or a.epochs  # the run's own length: the budget's default is another
        how = (
            f"Reproduce: `CONV_EPOCHS={ep} bash benchmarks/run_studies.sh gpu` on a GPU box (the trainings: `python "
            f"benchmarks/convergence.py --data DATA --device cuda --epochs {ep} --jobs 4 --parts train,report`), then "
            "`bash benchmarks/run_studies.sh finish DIR` on the CPU to report (`python benchmarks/convergence.py "
            "--parts measure,report`)."
        )
    else:
        how = (
            f"Reproduce on a CPU: `python benchmarks/convergence.py --budget {a.budget}{epochs} --data DATA --seeds {a.seeds} "
            "--jobs 2 --parts train` (resumable: run it again after an interruption), then `python benchmarks/"
            f"convergence.py --budget {a.budget}{epochs} --parts measure,report` on a quiet machine."
        )
    if a.note:
        lines += [a.note, ""]
    lines += [
        how + " The study's own commands:",
        "",
        "```",
        *commands,
        "```",
        "",
    ]
    out.with_suffix(".md").write_text("\n".join(lines))
    out.with_suffix(".json").write_text(json.dumps(s, indent=1))
    plot(s, a.pair, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.md')}, {out.with_suffix('.json')}, {out.with_suffix('.png')}")


def plot(s: dict, pair: list[str], path: Path) -> None:
    import numpy as np

    from cspnet.engine.plots import plt, save_figure

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for name, color in zip(pair, ("tab:red", "tab:blue")):
        m = s["models"].get(name)
        if not m or not m["curves"]:
            continue
        n = min(len(v) for v in m["curves"].values())
        if n == 0:
            continue
        y = np.array([v[:n] for v in m["curves"].values()])
        x = np.arange(1, n + 1)
        label = f"{name} ({m['macs'] / 1e6:.0f} MMACs, {len(y)} seeds)" if m["macs"] else name
        ax.plot(x, y.mean(0), color=color, marker=".", label=label)
        if len(y) > 1:
            ax.fill_between(x, y.min(0), y.max(0), color=color, alpha=0.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test top-1 (%), mean; band: min-max over seeds")
    ax.set_title("CIFAR-10, all training images, same recipe")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no curves yet", ha="center", va="center", transform=ax.transAxes)
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(REPO))
    from cspnet.ablate.report import collect
    from cspnet.cli import main as cspnet_main

    a = parse(argv)
    a.name = a.name or f"{a.pair[0]}_vs_{a.pair[1]}"
    parts = a.parts.split(",") if a.parts else None
    rc = cspnet_main(ablate_argv(a))  # trainings, CPU measurement and the study's own table: `cspnet ablate`
    if rc:
        return rc
    if parts is None or "report" in parts:
        study = Path(a.project) / a.name
        info, rows = collect(study)
        write(a, summarize(info, rows, study), info.get("commands", []))
    return 0


if __name__ == "__main__":
    sys.exit(main())
