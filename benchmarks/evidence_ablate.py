"""The fusion/γ grid of docs/results/evidence.md §4, trained to the plateau of docs/results/protocol.md ("Ablation
with power"): four variants of cspresnet10 in the classification study's folder and recipe, whose resnet10 and
cspresnet10 runs are the grid's reference rows.

Each (variant, seed) run writes docs/results/evidence/ablate/<variant>_seed<k>.json when it finishes (committed with
the summary and the page with --commit); a run whose JSON exists is skipped, so the study resumes run by run.

    nohup nice python benchmarks/evidence_ablate.py train --data /tmp/cifar10 --jobs 2 --commit &
    python benchmarks/evidence_ablate.py report     # docs/results/evidence/ablate.json from the run JSONs
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import evidence_classify as evc  # noqa: E402 (the classification study's recipe, lanes and plateau rule)

REPO = evc.REPO
RESULTS = REPO / "docs" / "results" / "evidence" / "ablate"
GRID = ("fusion=first", "fusion=last", "gamma=0.25", "gamma=0.75")  # variants of cspresnet10 (fusion both, γ 0.5)
SLOWEST_FIRST = ("gamma=0.75", "fusion=first", "fusion=last", "gamma=0.25")  # by MACs: the lanes end together
REFERENCE = {"plain": evc.PAIR[1], "fusion=both,gamma=0.5": evc.PAIR[0]}  # rows reused from the classification study
# CSPNet Section 4.2 (PeleeNet on ImageNet), top-1 change in points against PeleeNet (benchmarks/ablation_doc.py)
PAPER_TOP1 = {"fusion=first": -1.5, "fusion=last": -0.1, "fusion=both,gamma=0.5": +0.2, "gamma=0.25": +0.8}


def result_path(label: str, seed: int) -> Path:
    if label in REFERENCE:
        return evc.result_path(REFERENCE[label], seed)
    return RESULTS / f"{label.replace('=', '-').replace(',', '_')}_seed{seed}.json"


def units(seeds: int) -> list[tuple[str, int]]:
    return [(label, s) for s in range(seeds) for label in SLOWEST_FIRST]


def study(args, data: str | None = None):
    return evc.study(args, data, grid=GRID)


def lane(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    s = study(args, args.data)
    order = [(label, int(k)) for label, k in (item.rsplit(":", 1) for item in args.units.split(","))]
    base = s.cfg.budget.epochs
    take = evc.take_runs
    take(order, lambda lb, k: evc.next_length(result_path(lb, k), base), lambda lb, k, n: run_to(args, s, lb, k, n))


def run_to(args, s, label: str, seed: int, epochs: int) -> None:
    v = next(v for v in s.variants if v.label == label)
    out = evc.train_record(args, s, v, seed, epochs)
    path = result_path(label, seed)
    evc.write_json(path, out)
    print(f"ablate: {label} seed {seed}: top-1 {out['final_top1']:.2f}, plateau {out['plateau']}", flush=True)
    if args.commit:
        report(args)
        subprocess.run([sys.executable, str(REPO / "benchmarks" / "evidence.py")], check=False)
        msg = f"evidence grid: cspresnet10 {label} seed {seed} ({evc.BUDGET}, {out['epochs']} epochs): top-1 "
        evc.git_commit(
            [path, RESULTS.parent / "ablate.json", REPO / "docs/results/evidence.md"], msg + f"{out['final_top1']:.2f}"
        )


def train(args) -> None:
    s = study(args, args.data)
    base = s.cfg.budget.epochs
    todo = {u: n for u in units(evc.SEEDS) if (n := evc.next_length(result_path(*u), base)) is not None}
    print(f"ablate: {len(todo)} of {len(GRID) * evc.SEEDS} runs to train or extend: {todo}", flush=True)
    if not todo:
        return
    s.open()  # pins the recipe (the classification study's) before the lanes start
    argv = [sys.executable, __file__, "lane", "--data", args.data, "--project", args.project]
    argv += ["--threads", str(args.threads), "--workers", str(args.workers), "--jobs", str(args.jobs)]
    argv += ["--units", ",".join(f"{lb}:{k}" for lb, k in units(evc.SEEDS))] + (["--commit"] if args.commit else [])
    procs = []
    for _ in range(min(args.jobs, len(todo))):
        procs.append(subprocess.Popen(argv))
        time.sleep(20)  # the first lane holds its run before the next one looks
    sys.exit(max(p.wait() for p in procs))


def macs_params(label: str) -> tuple[int, int]:
    """MACs and params at the trained input (32x32, 10 classes)."""
    from cspnet.ablate.grid import make_variant
    from cspnet.bench.measure import count_macs, count_params
    from cspnet.models import create_model

    v = make_variant(evc.PAIR[1], f"model={REFERENCE[label]}" if label in REFERENCE else label)
    model = create_model(v.model, num_classes=10, **v.kwargs())
    return count_macs(model, 32), count_params(model)


def verdict(d: dict | None, paper: float, complete: bool) -> str:
    if d is None or not complete:
        return "not shown yet (study running)"
    if abs(d["delta"]) <= 2 * d["se"]:
        return "not shown (|Δ| ≤ 2·SE)"
    return "supported" if (d["delta"] > 0) == (paper > 0) else "refuted"


def summary() -> dict:
    """Every row (the two reused ones and the grid) with its runs, MACs, params and differences; the paper's two
    trends with our difference, its SE and a verdict (protocol.md)."""
    rows, recipes = {}, set()
    for label in ("plain", "fusion=both,gamma=0.5", *GRID):
        runs = [json.loads(p.read_text()) for k in range(evc.SEEDS) if (p := result_path(label, k)).is_file()]
        recipes |= {json.dumps(r["recipe"], sort_keys=True) for r in runs}
        finals = [r["final_top1"] for r in runs]
        mean, std = evc.mean_std(finals)
        macs, params = macs_params(label)
        rows[label] = {
            "seeds": [r["seed"] for r in runs],
            "epochs": [len(r["curve_top1"]) for r in runs],
            "final_top1": finals,
            "mean": mean,
            "std": std,
            "plateau_holds": [evc.plateau(r["curve_top1"])["holds"] for r in runs],
            "macs": macs,
            "params": params,
            "paper_top1_vs_plain": PAPER_TOP1.get(label),
        }
    for row in rows.values():
        row["diff_vs_plain"] = evc.difference(row["final_top1"], rows["plain"]["final_top1"])
        row["diff_vs_cspresnet10"] = evc.difference(row["final_top1"], rows["fusion=both,gamma=0.5"]["final_top1"])

    def done(r: dict) -> bool:  # 3 seeds, each at its plateau or at the epoch cap
        ends = zip(r["plateau_holds"], r["epochs"], strict=True)
        return len(r["seeds"]) == evc.SEEDS and all(h or n >= evc.MAX_EPOCHS for h, n in ends)

    complete = all(done(r) for r in rows.values())
    top1 = {label: r["final_top1"] for label, r in rows.items()}
    half = "fusion=both,gamma=0.5"
    trends = {
        "fusion last minus fusion first": (
            evc.difference(top1["fusion=last"], top1["fusion=first"]),
            round(-0.1 - -1.5, 1),
        ),
        "γ 0.25 minus γ 0.5, paper's γ as ours": (evc.difference(top1["gamma=0.25"], top1[half]), round(0.8 - 0.2, 1)),
        "γ 0.25 minus γ 0.5, paper's γ as our 1−γ": (
            evc.difference(top1["gamma=0.75"], top1[half]),
            round(0.8 - 0.2, 1),
        ),
    }
    return {
        "budget": evc.BUDGET,
        "seeds_planned": evc.SEEDS,
        "runs_finished": sum(len(r["seeds"]) for label, r in rows.items() if label not in REFERENCE),
        "runs_planned": len(GRID) * evc.SEEDS,
        "one_recipe": len(recipes) <= 1,
        "complete": complete,
        "rows": rows,
        "trends": {k: {"ours": d, "paper": p, "verdict": verdict(d, p, complete)} for k, (d, p) in trends.items()},
    }


def report(args=None) -> None:
    s = summary()
    path = RESULTS.parent / "ablate.json"
    evc.write_json(path, s)
    for label, r in s["rows"].items():
        print(label, r["final_top1"], r["epochs"])
    print({k: t["verdict"] for k, t in s["trends"].items()}, "->", path)


def main(argv: list[str] | None = None) -> None:
    evc.run_part(__doc__, {"train": train, "lane": lane, "report": report}, argv)


if __name__ == "__main__":
    main()
