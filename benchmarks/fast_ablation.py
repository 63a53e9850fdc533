"""Ablation of the fused eval path (cspnet/nn/fuse.py): each option on top of the previous, interleaved in one process.

Also the torch.profiler share of non-conv ops (cat, copies, adds, activations) in the final fused path.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/fast_ablation.py --batch 1 8 --json /tmp/ablation.json
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
from collections import Counter

import torch

from cspnet.bench.measure import time_interleaved
from cspnet.deploy.fuse import fuse_model
from cspnet.models import create_model
from cspnet.nn.bn import calibrate_bn

STEPS = {  # label -> fuse_model options (unfused "eager" runs timm's exact op sequence)
    "eager (unfused)": None,
    "fold BN (plain torch ops)": dict(onednn=False),
    "fuse, oneDNN post-ops": dict(pack=False, split=False),
    "+ packed weights": dict(split=False),
    "+ split conv as slices (default)": {},
}


def op_shares(model, x) -> dict[str, float]:
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        model(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(2):
                model(x)
    ops = Counter({e.key: e.self_cpu_time_total for e in prof.key_averages()})
    total = sum(ops.values())
    return {k: v / total for k, v in ops.most_common(6)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["cspresnet50", "cspresnext50", "cspdarknet53"])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    out = {}
    for b in a.batch:
        x = torch.randn(b, 3, 224, 224)
        fns, shares = {}, {}
        for name in a.models:
            torch.manual_seed(0)
            model = create_model(name).eval()
            calibrate_bn(model, torch.randn(2, 3, 224, 224))
            for label, opts in STEPS.items():
                m = model if opts is None else fuse_model(copy.deepcopy(model), **opts)
                fns[f"{name} | {label}"] = lambda m=m, x=x: m(x)
            shares[name] = op_shares(fuse_model(copy.deepcopy(model)), x)
        with torch.inference_mode():
            times = time_interleaved(fns, runs=a.runs, warmup=2, rotate=True)
        out[f"batch {b}"] = {
            "median_ms": {k: statistics.median(v) * 1e3 for k, v in times.items()},
            "op_shares_fused": shares,
        }
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)
    print(table(out))


def table(out: dict) -> str:
    lines = []
    for group, res in out.items():
        med = res["median_ms"]
        lines += [f"**{group}**", "", "| model | step | median ms | vs eager |", "|---|---|---:|---:|"]
        for k, v in med.items():
            name, label = k.split(" | ")
            lines.append(f"| {name} | {label} | {v:.1f} | {v / med[f'{name} | eager (unfused)']:.2f} |")
        lines += ["", "Share of CPU time by op in the default fused path (torch.profiler, self time):", ""]
        for name, sh in res["op_shares_fused"].items():
            lines.append(f"- {name}: " + ", ".join(f"`{k}` {100 * v:.1f}%" for k, v in sh.items()))
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
