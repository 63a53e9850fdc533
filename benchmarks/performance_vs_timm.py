"""Issue 8's speed targets from one `cspnet bench` run: our fused eager path against timm eager, and our best path
against the best path a timm user has (timm eager, torch.compile with freezing, ONNX Runtime).

    OMP_WAIT_POLICY=PASSIVE nice -n 5 cspnet bench cspresnet50 cspresnext50 cspdarknet53 \\
        cspresnet50@ort cspresnext50@ort cspdarknet53@ort --fuse --timm-best --batch 1 8 --runs 12 --threads 2 \\
        --no-memory --out /tmp/perf/best
    python benchmarks/performance_vs_timm.py /tmp/perf/best/bench.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

MODELS = ("cspresnet50", "cspresnext50", "cspdarknet53")
# issue 8, item 2: fused eager / timm eager measured before the module swap (batch 1, batch 8); kept within +5%
ISSUE = {"cspresnet50": (0.57, 0.71), "cspresnext50": (0.60, 0.78), "cspdarknet53": (0.63, 0.67)}


def _label(r: dict) -> str:
    base = f"timm:{r['name']}" if r["source"] == "timm" else r["name"]
    return base + ("@" + "+".join(r["opts"]) if r["opts"] else "")


def tables(result: dict) -> str:
    lines = [
        "| model | batch | fused eager / timm eager | issue 8 figure | within +5% | timm's best path | "
        "our best path | ours best / timm's best | goal <= 0.90 |",
        "|---|---:|---:|---:|:---:|---|---|---:|:---:|",
    ]
    for g in result["groups"]:
        if g["mode"] != "infer":
            continue
        b = g["batch"]
        col = 0 if b == 1 else 1 if b == 8 else None
        for name in MODELS:
            rows = [r for r in g["rows"].values() if r["name"] == name]
            ours = [r for r in rows if r["source"] == "cspnet"]
            timm = [r for r in rows if r["source"] == "timm"]
            fused = next((r for r in ours if r["opts"] == ["fuse"]), None)
            eager = next((r for r in timm if not r["opts"]), None)
            if not (ours and timm and fused and eager):
                continue
            ratio = fused["median_ms"] / eager["median_ms"]
            goal = ISSUE[name][col] if col is not None else None
            ok = "-" if goal is None else ("yes" if ratio <= goal * 1.05 else "no")
            if fused.get("ratio_vs_timm_eager_noise"):  # the harness's noise flag: p75/p25 too wide for a result
                ok += f" (noisy: p75/p25 {fused['ratio_vs_timm_eager_noise']:.1f})"
            if not any(r["opts"] for r in timm):  # no timm compile / ORT rows in this run: no best-path columns
                lines.append(
                    f"| {name} | {b} | {ratio:.2f} | {'-' if goal is None else f'{goal:.2f}'} | {ok} | - | - | - | - |"
                )
                continue
            tb = min(timm, key=lambda r: r["median_ms"])
            ob = min(ours, key=lambda r: r["median_ms"])
            best = ob["median_ms"] / tb["median_ms"]
            lines.append(
                f"| {name} | {b} | {ratio:.2f} | {'-' if goal is None else f'{goal:.2f}'} | {ok} | "
                f"`{_label(tb)}` {tb['median_ms']:.1f} ms | `{_label(ob)}` {ob['median_ms']:.1f} ms | {best:.2f} | "
                f"{'yes' if best <= 0.9 else 'no'} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bench_json", help="bench.json written by `cspnet bench ... --out DIR`")
    a = p.parse_args()
    print(tables(json.loads(Path(a.bench_json).read_text())))


if __name__ == "__main__":
    main()
