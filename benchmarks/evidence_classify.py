"""The classification pair of docs/results/evidence.md, trained to the plateau of docs/results/protocol.md.

Each (model, seed) run is an `ablate` study unit (budget `plateau_cpu`); when one finishes, its curve is written to
docs/results/evidence/classify/<model>_seed<k>.json (committed with --commit). A run whose JSON exists is skipped, so
the study resumes run by run on a fresh clone; a killed run resumes from its last.pt while runs/ is there.

    nohup nice python benchmarks/evidence_classify.py train --data /tmp/cifar10 --jobs 2 --commit &
    python benchmarks/evidence_classify.py measure     # params, MACs, latency, train img/s (pause the training)
    python benchmarks/evidence_classify.py report      # docs/results/evidence/classify.json from the run JSONs
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from cspnet.io import write_json  # noqa: E402 (after the sys.path line; evidence_ablate.py uses it too)

RESULTS = REPO / "docs" / "results" / "evidence" / "classify"
PAIR = ("cspresnet10", "resnet10")  # CSP, plain
BUDGET = "plateau_cpu"
SEEDS = 3
WINDOW = 5  # plateau: |mean of the last WINDOW epochs - mean of the WINDOW before| < PLATEAU_POINTS
PLATEAU_POINTS = 0.2
EXTEND, MAX_EPOCHS = 5, 60  # protocol amendment 1: a run that misses the criterion goes on at the final lr


def units(seeds: int) -> list[tuple[str, int]]:
    """Seed-major, so both twins of a seed finish together; the slower plain twin first (lanes take the first free
    run, so the longest go first and the lanes end together)."""
    return [(m, s) for s in range(seeds) for m in (PAIR[1], PAIR[0])]


def result_path(model: str, seed: int) -> Path:
    return RESULTS / f"{model}_seed{seed}.json"


def study(args, data: str | None = None, grid: tuple[str, ...] = ()):
    """The pair's study folder; `grid` adds variants of the CSP model (evidence_ablate.py), under the one recipe that
    study.json pins."""
    from cspnet.ablate.budgets import get_budget
    from cspnet.ablate.study import Study, StudyCfg

    budget = get_budget(BUDGET, PAIR[1], workers=args.workers, threads=getattr(args, "threads", None))
    cfg = StudyCfg(
        base=PAIR[1],
        budget=budget,
        data=data,
        grid=[f"model={PAIR[0]}", *grid],
        seeds=SEEDS,
        name=f"{PAIR[0]}_vs_{PAIR[1]}",
        project=args.project,
        parts=("train",) if data else ("measure",),
        command=" ".join(sys.argv),
    )
    return Study(cfg)


def plateau(curve: list[float]) -> dict:
    if len(curve) < 2 * WINDOW:
        return {"holds": False, "move": None}
    last = statistics.fmean(curve[-WINDOW:])
    before = statistics.fmean(curve[-2 * WINDOW : -WINDOW])
    return {"holds": abs(last - before) < PLATEAU_POINTS, "move": last - before}


def next_length(path: Path, base: int) -> int | None:
    """The length the run of this JSON trains to next (the budget's, then +EXTEND while the criterion misses), None
    when done."""
    if not path.is_file():
        return base
    curve = json.loads(path.read_text())["curve_top1"]
    n = len(curve)
    return None if plateau(curve)["holds"] or n >= MAX_EPOCHS else min(n + EXTEND, MAX_EPOCHS)


def next_epochs(model: str, seed: int, base: int) -> int | None:
    return next_length(result_path(model, seed), base)


def take_runs(order: list[tuple[str, int]], next_len, run) -> None:
    """One lane of --jobs: take the first run no other lane holds (every run to the budget's length first, then the
    extensions of those that missed the criterion), until none is left for this lane."""
    from cspnet.engine.run import RunInUse

    while todo := [(n, i) for i, u in enumerate(order) if (n := next_len(*u)) is not None]:
        for n, i in sorted(todo):
            try:
                run(*order[i], n)
                break
            except RunInUse:  # another lane trains it
                continue
        else:
            return  # the rest is in other lanes' hands


def lane(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    s = study(args, args.data)
    variants = {v.model: v for v in s.variants}
    order = [(m, int(k)) for m, k in (item.split(":") for item in args.units.split(","))]
    base = s.cfg.budget.epochs
    take_runs(order, lambda m, k: next_epochs(m, k, base), lambda m, k, n: run_to(args, s, variants[m], k, n))


def train_record(args, s, v, seed: int, epochs: int) -> dict:
    """Train (or continue) one run to `epochs`: the fields of every run JSON of the plateau studies."""
    from cspnet.bench.harness import machine_info

    t0 = time.time()
    r = s.train_one(v, seed, epochs=epochs)
    base = s.cfg.budget.epochs
    return {
        "model": v.model,
        "variant": v.label,
        "overrides": dict(v.overrides),
        "seed": seed,
        "budget": BUDGET,
        "recipe": s.cfg.budget.recipe(),
        "epochs": len(r["curve"]),
        "extended_by_amendment_1": len(r["curve"]) > base,
        "curve_top1": r["curve"],
        "final_top1": r["top1"],
        f"top1_at_{base}": r["curve"][base - 1] if len(r["curve"]) >= base else None,
        "plateau": plateau(r["curve"]),
        "train_img_s_loaded": r["img_s"],
        "wall_s_last_sitting": round(time.time() - t0),
        "machine": machine_info(args.threads),
        "load_note": f"{args.jobs} runs in parallel, {args.threads} torch thread(s) each, nice'd, beside development work",
    }


def git_commit(paths: list[Path], msg: str) -> None:
    """Commit exactly these paths (other staged or changed files stay as they are)."""
    rel = [str(p.relative_to(REPO)) for p in paths]
    subprocess.run(["git", "-C", str(REPO), "add", *rel], check=False)
    subprocess.run(["git", "-C", str(REPO), "commit", "-q", "-m", msg, "--only", "--", *rel], check=False)


def run_to(args, s, v, seed: int, epochs: int) -> None:
    """Train (or continue) one run to `epochs` and write, then commit, its JSON."""
    out = train_record(args, s, v, seed, epochs)
    path = result_path(v.model, seed)
    write_json(path, out)
    print(f"evidence: {v.model} seed {seed}: top-1 {out['final_top1']:.2f}, plateau {out['plateau']}", flush=True)
    if args.commit:  # the run, the summary, its plot and the evidence page in one commit: they never disagree
        report(args)
        # the grid's reference rows are this study's runs (evidence_ablate.py)
        subprocess.run([sys.executable, str(REPO / "benchmarks" / "evidence_ablate.py"), "report"], check=False)
        subprocess.run([sys.executable, str(REPO / "benchmarks" / "evidence.py")], check=False)
        paths = [path, *(RESULTS.parent / f for f in ("classify.json", "classify.png", "ablate.json"))]
        paths.append(REPO / "docs/results/evidence.md")
        msg = f"evidence: {v.model} seed {seed} on CIFAR-10 ({BUDGET}, {out['epochs']} epochs): top-1 {out['final_top1']:.2f}"
        git_commit(paths, msg)


def train(args) -> None:
    s = study(args, args.data)
    todo = {u: n for u in units(SEEDS) if (n := next_epochs(*u, s.cfg.budget.epochs)) is not None}
    print(f"evidence: {len(todo)} of {2 * SEEDS} runs to train or extend: {todo}", flush=True)
    if not todo:
        return
    s.open()  # pins the recipe once, before the lanes start
    procs = []
    for _ in range(min(args.jobs, len(todo))):  # every lane sees every run and takes the first free one
        argv = [sys.executable, __file__, "lane", "--data", args.data, "--project", args.project]
        argv += ["--threads", str(args.threads), "--workers", str(args.workers), "--jobs", str(args.jobs)]
        argv += ["--units", ",".join(f"{m}:{s}" for m, s in units(SEEDS))] + (["--commit"] if args.commit else [])
        procs.append(subprocess.Popen(argv))
        time.sleep(20)  # the first lane holds its run before the next one looks
    sys.exit(max(p.wait() for p in procs))


def measure(args) -> None:
    """Params, MACs, fused/unfused latency at batch 1 and 8 at 32x32 (trained) and 224x224 (not overhead-bound), and
    training img/s at the recipe's batch, interleaved; run it with the trainings paused (kill -STOP)."""
    import dataclasses

    from cspnet.ablate.measure import measure_variants

    s = study(args)
    plain, csp = s.variants[0], next(v for v in s.variants if v.model == PAIR[0])
    out = {"commands": " ".join(sys.argv)}
    for img, train_batch in ((32, s.cfg.budget.batch), (224, 8)):
        b = dataclasses.replace(s.cfg.budget, img=img, threads=args.threads, train_batch=train_batch, latency_runs=15)
        r = measure_variants([plain, csp], b, num_classes=10)
        out[str(img)] = {v.model: r[v.slug] for v in (plain, csp)}
        print(json.dumps({img: {m: (x["latency"], x["train_step"]) for m, x in out[str(img)].items()}}), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "measure.json").write_text(json.dumps(out, indent=1) + "\n")


def mean_std(xs: list[float]) -> tuple[float | None, float | None]:
    return (statistics.fmean(xs) if xs else None), (statistics.stdev(xs) if len(xs) > 1 else None)


def difference(a: list[float], b: list[float]) -> dict | None:
    """mean(a) - mean(b) with its standard error and the smallest difference detectable (80% power, 5%)."""
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    if sa is None or sb is None:
        return None
    se = (sa**2 / len(a) + sb**2 / len(b)) ** 0.5
    return {"delta": ma - mb, "se": se, "detectable": 2.8 * se}


def summary(base: int = 40) -> dict:
    """The committed run JSONs and measure.json in one dict: per model the finals (each run where it stopped, see
    protocol amendment 1), mean, std, length and plateau per run, and the same at the budget's `base` epochs; the
    differences with their standard errors and the smallest difference the study can detect."""
    models = {}
    for m in PAIR:
        runs = [json.loads(result_path(m, s).read_text()) for s in range(SEEDS) if result_path(m, s).is_file()]
        finals = [r["final_top1"] for r in runs]
        at_base = [r["curve_top1"][base - 1] for r in runs if len(r["curve_top1"]) >= base]
        mean, std = mean_std(finals)
        models[m] = {
            "seeds": [r["seed"] for r in runs],
            "final_top1": finals,
            "epochs": [len(r["curve_top1"]) for r in runs],
            "mean": mean,
            "std": std,
            f"top1_at_{base}": at_base,
            "plateau": [plateau(r["curve_top1"]) for r in runs],
            "curves": {r["seed"]: r["curve_top1"] for r in runs},
            "machine": runs[0]["machine"] if runs else None,
        }
    csp, plain = (models[m] for m in PAIR)
    out = {"pair": PAIR, "budget": BUDGET, "seeds_planned": SEEDS, "base_epochs": base, "models": models}
    out["diff"] = difference(csp["final_top1"], plain["final_top1"])
    out[f"diff_at_{base}"] = difference(csp[f"top1_at_{base}"], plain[f"top1_at_{base}"])
    mpath = RESULTS / "measure.json"
    out["measure"] = json.loads(mpath.read_text()) if mpath.is_file() else None
    return out


def plot(s: dict, path: Path) -> None:
    """Every run's test top-1 per epoch, both twins: all epochs, and the tail where the plateau criterion looks."""
    from cspnet.engine.plots import plt, save_figure

    fig, (full, tail) = plt.subplots(1, 2, figsize=(11, 4))
    for (name, m), color in zip(s["models"].items(), ("tab:red", "tab:blue"), strict=True):
        for seed, curve in m["curves"].items():
            for ax in (full, tail):
                ax.plot(range(1, len(curve) + 1), curve, color=color, alpha=0.8, label=f"{name} seed {seed}")
    tail.set_xlim(
        s["base_epochs"] - 2 * WINDOW - 5,
        max((len(c) for m in s["models"].values() for c in m["curves"].values()), default=40) + 1,
    )
    lows = [min(c[-2 * WINDOW :]) for m in s["models"].values() for c in m["curves"].values()]
    if lows:
        tail.set_ylim(min(lows) - 1, None)
    for ax, title in ((full, "all epochs"), (tail, "the tail at the final lr")):
        ax.set(xlabel="epoch", ylabel="test top-1 (%), EMA weights", title=title)
        ax.grid(alpha=0.3)
    full.legend(fontsize=7)
    fig.suptitle(f"CIFAR-10, {PAIR[0]} vs {PAIR[1]} ({BUDGET})")
    save_figure(fig, path, dpi=90)


def report(args) -> None:
    s = summary()
    path = RESULTS.parent / "classify.json"
    write_json(path, s)
    plot(s, RESULTS.parent / "classify.png")
    for m, x in s["models"].items():
        print(m, x["final_top1"], [p["move"] for p in x["plateau"]])
    print("diff", s["diff"], "->", path)


def run_part(doc: str, parts: dict, argv: list[str] | None = None) -> None:
    """The command line of a plateau study script: `parts` maps each part's name to its function."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("part", choices=tuple(parts))
    p.add_argument("--data", default=None)
    p.add_argument("--project", default="runs/evidence")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads per training lane (measure: 2)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--units", default="")
    p.add_argument("--commit", action="store_true", help="git commit each run's JSON when it finishes")
    args = p.parse_args(argv)
    if args.part in ("train", "lane") and not args.data:
        p.error("train needs --data (CIFAR-10 folder or zip)")
    parts[args.part](args)


def main(argv: list[str] | None = None) -> None:
    run_part(__doc__, {"train": train, "lane": lane, "measure": measure, "report": report}, argv)


if __name__ == "__main__":
    main()
