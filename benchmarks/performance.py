"""The performance report: docs/results/performance.md (+ .json, .png) from `cspnet bench` measurements.

Three interleaved matrices (each group of variants is timed round-robin in one process with a matmul peak):
  A. inference, the three CSP/plain pairs, ours and timm, NCHW and channels_last, plus our fused path; batch 1 and 8
  B. deployment paths for cspresnet50 at batch 1: eager, fused, channels_last, torch.compile, ONNX Runtime
  C. training steps (forward + backward + SGD step) of the three pairs at batch 8, with peak memory

    python benchmarks/performance.py                       # everything (~30 min on 2 busy cores)
    python benchmarks/performance.py --only A --runs 5     # one matrix
    python benchmarks/performance.py --render docs/results/performance.json   # rewrite the markdown only
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import torch

from cspnet.bench.harness import BenchConfig, parse_variant, run_bench
from cspnet.bench.report import chart
from cspnet.bench.report import markdown as group_markdown

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "results" / "performance"
PAIRS = [("cspresnet50", "resnet50"), ("cspresnext50", "resnext50_32x4d"), ("cspdarknet53", "darknet53")]


def matrix_a() -> list[str]:
    out = []
    for pair in PAIRS:
        for n in pair:
            out += [n, f"timm:{n}", f"{n}@cl", f"timm:{n}@cl", f"{n}@fuse"]
    return out


MATRICES = {
    "A": dict(variants=matrix_a(), batches=(1, 8), train=False, memory=False),
    "B": dict(
        variants=[
            "timm:cspresnet50",
            "timm:cspresnet50@cl",
            "cspresnet50",
            "cspresnet50@fuse",
            "cspresnet50@fuse+cl",
            "cspresnet50@fuse+compile",
            "cspresnet50@fuse+cl+compile",
            "cspresnet50@ort",
        ],
        batches=(1,),
        train=False,
        memory=True,
    ),
    "C": dict(variants=[n for p in PAIRS for n in p], batches=(8,), train=True, memory=True, train_only=True),
}


def measure(name: str, runs: int, threads: int | None) -> dict:
    spec = dict(MATRICES[name])
    train_only = spec.pop("train_only", False)
    cfg = BenchConfig(variants=[parse_variant(v) for v in spec.pop("variants")], runs=runs, threads=threads, **spec)
    if train_only:  # training groups only: run_bench's inference groups would double the time
        from cspnet.bench.harness import machine_info, run_group

        t0 = time.time()
        groups = [run_group(cfg, b, True) for b in cfg.batches]
        return {
            "machine": machine_info(torch.get_num_threads()),
            "config": {"img_size": cfg.img_size, "dtype": cfg.dtype, "runs": runs, "warmup": cfg.warmup},
            "groups": groups,
            "seconds": time.time() - t0,
        }
    t0 = time.time()
    res = run_bench(cfg)
    res["seconds"] = time.time() - t0
    return res


def _row(group: dict, label: str) -> dict | None:
    return group["rows"].get(label)


def targets(results: dict) -> list[str]:
    """The issue's targets as a table, computed from the measurements."""
    lines = ["| target | setting | batch | measured | goal | met |", "|---|---|---:|---:|---:|:---:|"]

    def add(target: str, setting: str, batch: int, value: float | None, goal: float) -> None:
        if value is None:
            return
        lines.append(
            f"| {target} | {setting} | {batch} | {value:.2f} | <= {goal:.2f} | {'yes' if value <= goal else 'no'} |"
        )

    a = results.get("A")
    if a:
        for g in a["groups"]:
            b = g["batch"]
            for csp, _plain in PAIRS:
                for ours, ref, setting in [
                    (csp, f"timm:{csp}", "eager NCHW, both"),
                    (f"{csp}@cl", f"timm:{csp}@cl", "eager channels_last, both"),
                    (f"{csp}@fuse", f"timm:{csp}", "ours fused (eager) vs timm eager NCHW"),
                    (f"{csp}@fuse", f"timm:{csp}@cl", "ours fused (eager) vs timm eager channels_last"),
                ]:
                    o, r = _row(g, ours), _row(g, ref)
                    if o and r:
                        add(f"{csp} / timm {csp}", setting, b, o["median_ms"] / r["median_ms"], 1.0)
            for csp, plain in PAIRS:
                for suffix, setting in [("", "eager NCHW"), ("@cl", "eager channels_last"), ("@fuse", "fused")]:
                    o, p = _row(g, csp + suffix), _row(g, plain + suffix)
                    if o and p:
                        add(
                            f"{csp} / {plain} vs MACs",
                            f"ours, {setting}",
                            b,
                            o["median_ms"] / p["median_ms"],
                            o["macs"] / p["macs"],
                        )
                o, p = _row(g, f"timm:{csp}"), _row(g, f"timm:{plain}")
                if o and p:
                    add(
                        f"{csp} / {plain} vs MACs",
                        "timm, eager NCHW (reference)",
                        b,
                        o["median_ms"] / p["median_ms"],
                        o["macs"] / p["macs"],
                    )
    f = results.get("F")  # focused rerun: fused pairs and timm eager, more runs
    if f:
        for g in f["groups"]:
            b = g["batch"]
            for csp, _plain in PAIRS:
                o, r = _row(g, f"{csp}@fuse"), _row(g, f"timm:{csp}")
                if o and r:
                    add(
                        f"{csp} / timm {csp}",
                        "F: ours fused vs timm eager NCHW",
                        b,
                        o["median_ms"] / r["median_ms"],
                        1.0,
                    )
            for csp, plain in PAIRS:
                for ours, setting in [("{}@fuse", "F: ours, fused"), ("timm:{}", "F: timm, eager NCHW (reference)")]:
                    o, p_ = _row(g, ours.format(csp)), _row(g, ours.format(plain))
                    if o and p_:
                        add(
                            f"{csp} / {plain} vs MACs",
                            setting,
                            b,
                            o["median_ms"] / p_["median_ms"],
                            o["macs"] / p_["macs"],
                        )
    bres = results.get("B")
    if bres:
        g = bres["groups"][0]
        ref = _row(g, "timm:cspresnet50")
        ours = {k: r for k, r in g["rows"].items() if r["source"] == "cspnet"}
        best = min(ours, key=lambda k: ours[k]["median_ms"])
        add(
            "best deployment path / timm eager",
            f"cspresnet50: {best}",
            g["batch"],
            ours[best]["median_ms"] / ref["median_ms"],
            0.75,
        )
    return lines


def render(results: dict, cmd: str, notes: str = "") -> str:
    m = next(iter(results.values()))["machine"]
    lines = [
        "# Performance on CPU",
        "",
        "Produced by `" + cmd + "` (commit it ran on: see git log).",
        "",
        f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, {m['threads']} torch threads, "
        f"ISA {'/'.join(m['isa'])}{'' if 'avx512f' in m['isa'] else ' (no AVX-512, so no native bf16 or VNNI int8)'}, "
        f"OMP_WAIT_POLICY={m.get('omp_wait_policy', 'default')}; torch {m['torch']}, "
        f"timm {m.get('timm', '-')}, onnxruntime {m.get('onnxruntime', '-')}. The 2 cores were shared with other "
        "jobs during the run: every table is one interleaved measurement (variants timed round-robin in one "
        "process, medians), so ratios inside a table hold better than absolute milliseconds.",
        "",
        "Weights are random; BN statistics are calibrated on one batch first so activations have a trained "
        "net's scale. Variants: `NAME` our model, `timm:NAME` timm's, `@cl` channels_last, `@fuse` `model.fuse()` "
        "(BN folded; our fused eval path then runs each conv+bias+activation, and the residual add, as one "
        "oneDNN call with pre-packed weights, and splits the CSP 1x1 conv instead of copying its halves), "
        "`@compile` torch.compile (inductor, freezing), `@ort` ONNX Runtime on the exported fused graph.",
        "",
        notes,
        "## Targets",
        "",
        *targets(results),
        "",
        "![latency against MACs](performance.png)",
        "",
    ]
    titles = {
        "A": "A. Inference: CSP models, their plain twins, timm",
        "B": "B. Deployment paths, cspresnet50",
        "C": "C. Training step (forward, backward, SGD step)",
    }
    for k, res in results.items():
        if k not in titles:  # F is rendered by main() with its own command
            continue
        lines += [f"## {titles[k]}", "", f"{res['seconds'] / 60:.0f} min to measure.", "", group_markdown(res)]
    lines += [
        "Peak memory: the largest total size of tensors alive at once that were created during one step "
        "(activations, temporaries, gradients), from torch.profiler's memory timeline; tensors that existed "
        "before the step (weights, input, optimizer state) are not counted. `-`: not measurable (ONNX Runtime, "
        "compiled graphs) or not measured.",
        "",
    ]
    return "\n".join(lines)


def precision_section(p: dict) -> str:
    """bf16 and int8 against fp32: accuracy on CIFAR-10 and speed, from benchmarks/precision.py."""
    lines = [
        "## D. Reduced precision",
        "",
        "Produced by `OMP_WAIT_POLICY=PASSIVE python benchmarks/precision.py --weights CKPT`, CKPT the cspresnet10 "
        "best.pt (EMA weights) of the run in [classify_cifar10.md](classify_cifar10.md) (3 epochs on 10,000 images at "
        "32x32: a CPU-budget model, hence the low accuracy; that page reports the last epoch, 41.18%).",
        "",
    ]
    acc = p.get("accuracy")
    if acc:
        lines += [
            f"Accuracy: `{acc['model']}` CIFAR-10 checkpoint `{acc['checkpoint']}` ({acc['img']}x{acc['img']} input), "
            f"all {acc['test_images']} test images. int8: onnxruntime static post-training quantization (QDQ, "
            "per-channel weights, 512 calibration images from the train split).",
            "",
            "| precision | top-1 | top-1 agreement with fp32 | max logit diff vs fp32 |",
            "|---|---:|---:|---:|",
        ]
        for k, r in acc["rows"].items():
            lines.append(f"| {k} | {100 * r['top1']:.2f}% | {100 * r['agree_fp32']:.2f}% | {r['max_logit_diff']:.3g} |")
        lines.append("")
    sp = p["speed"]
    med = sp["median_ms"]
    base = med["fp32 PyTorch eager"]
    lines += [
        f"Speed: `{sp['model']}`, batch {sp['batch']}, {sp['img']}x{sp['img']}, {sp['runs']} interleaved runs, "
        f"OMP_WAIT_POLICY={p['machine'].get('omp_wait_policy', 'default')}.",
        "",
        "| path | median ms | vs fp32 PyTorch eager |",
        "|---|---:|---:|",
        *[f"| {k} | {v:.1f} | {v / base:.2f} |" for k, v in med.items()],
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", choices=sorted(MATRICES), default=sorted(MATRICES))
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--train-runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=str(OUT), help="writes OUT.json, OUT.md, OUT.png")
    p.add_argument("--render", nargs="+", default=None, help="only rewrite the markdown from these JSONs (merged)")
    p.add_argument("--profile", default=None, help="JSON from benchmarks/profile_convs.py to include")
    p.add_argument("--notes", default=None, help="markdown file inserted before the targets table")
    p.add_argument("--ablation", default=None, help="JSON from benchmarks/fast_ablation.py to include")
    p.add_argument("--pairs", default=None, help="bench.json of a focused `cspnet bench` run to include")
    p.add_argument("--pairs-cmd", default="", help="the command that produced --pairs")
    p.add_argument("--precision", default=None, help="JSON from benchmarks/precision.py to include")
    a = p.parse_args()
    out = Path(a.out)
    env = f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']} " if "OMP_WAIT_POLICY" in os.environ else ""
    cmd = env + "python benchmarks/" + Path(__file__).name + (" " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "")
    if a.render:
        results, cmds = {}, []
        for path in a.render:
            saved = json.loads(Path(path).read_text())
            results.update(saved["results"])
            cmds.append(saved["command"])
        results = {k: results[k] for k in sorted(results)}
        cmd = "` and `".join(cmds)
    else:
        results = {}
        for k in a.only:
            results[k] = measure(k, a.train_runs if k == "C" else a.runs, a.threads)
            print(f"matrix {k} done in {results[k]['seconds'] / 60:.1f} min", flush=True)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.with_suffix(".json").write_text(json.dumps({"command": cmd, "results": results}, indent=2))
    if "A" in results:
        chart(results["A"], out.with_suffix(".png"))
    if a.pairs:
        results["F"] = json.loads(Path(a.pairs).read_text())
    text = render(results, cmd, Path(a.notes).read_text() if a.notes else "")
    if a.profile:
        from profile_convs import table

        text += (
            "## E. Profile: conv time by role\n\nProduced by `OMP_WAIT_POLICY=PASSIVE python benchmarks/profile_convs.py "
            "cspresnet50 resnet50 cspresnext50 resnext50_32x4d cspdarknet53 darknet53 --batch 8 --runs 3`. "
            "BN folded, fast path off so each conv is one hooked module call (hooks add a little time).\n\n"
            + "\n".join(table(r) for r in json.loads(Path(a.profile).read_text()))
        )
    if a.pairs:
        text += (
            "## F. Focused rerun: fused CSP/plain pairs and timm eager\n\nProduced by `"
            + a.pairs_cmd
            + "`; fewer variants per group than table A, more runs.\n\n![F: latency against MACs](performance_pairs.png)\n\n"
            + group_markdown(json.loads(Path(a.pairs).read_text()))
            + "\n"
        )
    if a.ablation:
        from fast_ablation import table as ablation_table

        text += (
            "## G. Ablation of the fused path\n\nProduced by `OMP_WAIT_POLICY=PASSIVE python benchmarks/fast_ablation.py "
            "--batch 1 8 --runs 8`.\n\n" + ablation_table(json.loads(Path(a.ablation).read_text())) + "\n"
        )
    if a.precision:
        text += precision_section(json.loads(Path(a.precision).read_text()))
    if a.render:
        text += (
            "\nThis page was assembled from the saved measurements by `python benchmarks/performance.py "
            + shlex.join(sys.argv[1:])
            + "`.\n"
        )
    out.with_suffix(".md").write_text(text)
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
