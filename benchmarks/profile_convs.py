"""Where a CSP model and its plain twin spend time: per-role conv MACs, time and GFLOP/s (BN folded).

Each ConvBNAct is timed by forward hooks (median over runs); roles: stem, conv_down, conv_exp (split conv),
blocks 1x1 / kxk, transition_b, transition. Shows whether the CSP model's MACs run as efficiently as the plain's.
BN is folded (fuse_model(onednn=False): plain torch ops) so that every conv is one nn.Conv2d call a hook can time.

    python benchmarks/profile_convs.py cspdarknet53 darknet53 --batch 8
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict

import torch

from cspnet.deploy.fuse import FusedConvAct, fuse_model
from cspnet.models import create_model
from cspnet.nn.bn import calibrate_bn


def role(name: str, m: FusedConvAct) -> str:
    if name.startswith("stem"):
        return "stem"
    for r in ("conv_down", "conv_exp", "conv_transition_b", "conv_transition", "downsample"):
        if name.endswith(r):
            return r
    k = m.conv.kernel_size[0]
    return f"blocks {k}x{k}" + (" grouped" if m.conv.groups > 1 else "")


def profile(name: str, batch: int, runs: int, img: int = 224) -> dict:
    torch.manual_seed(0)
    model = create_model(name).eval()
    calibrate_bn(model, torch.randn(2, 3, img, img))
    fuse_model(model, onednn=False)
    x = torch.randn(batch, 3, img, img)
    times: dict[str, list[float]] = defaultdict(list)
    macs: dict[str, int] = {}
    t0: dict[str, float] = {}

    def pre(n):
        return lambda mod, inp: t0.__setitem__(n, time.perf_counter())

    def post(n, m):
        def hook(mod, inp, out):
            times[n].append(time.perf_counter() - t0[n])
            c = m.conv
            macs[n] = out.numel() * c.in_channels // c.groups * c.kernel_size[0] * c.kernel_size[1]

        return hook

    units = {n: m for n, m in model.named_modules() if isinstance(m, FusedConvAct)}
    for n, m in units.items():  # on the nn.Conv2d: every plain branch of the fused modules calls it
        m.conv.register_forward_pre_hook(pre(n))
        m.conv.register_forward_hook(post(n, m))
    with torch.inference_mode():
        model(x)  # packs weights, creates oneDNN primitives
        times.clear()
        totals = []
        for _ in range(runs):
            s = time.perf_counter()
            model(x)
            totals.append(time.perf_counter() - s)
    rows: dict[str, dict] = defaultdict(lambda: {"macs": 0, "sec": 0.0, "convs": 0})
    for n, m in units.items():
        r = rows[role(n, m)]
        r["macs"] += macs[n]
        r["sec"] += statistics.median(times[n])
        r["convs"] += 1
    total = statistics.median(totals)
    return {"model": name, "batch": batch, "total_ms": total * 1e3, "roles": dict(rows)}


def table(p: dict) -> str:
    conv_sec = sum(r["sec"] for r in p["roles"].values())
    macs = sum(r["macs"] for r in p["roles"].values())
    lines = [
        f"**{p['model']}**, batch {p['batch']}: {p['total_ms']:.0f} ms per forward, convs {conv_sec * 1e3:.0f} ms, "
        f"{macs / 1e9:.1f} GMACs in convs, {2 * macs / conv_sec / 1e9:.0f} GFLOP/s over all convs",
        "",
        "| role | convs | GMACs | % MACs | ms | % time | GFLOP/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for k, r in sorted(p["roles"].items(), key=lambda kv: -kv[1]["sec"]):
        lines.append(
            f"| {k} | {r['convs']} | {r['macs'] / 1e9:.2f} | {100 * r['macs'] / macs:.0f} | {r['sec'] * 1e3:.1f} | "
            f"{100 * r['sec'] / conv_sec:.0f} | {2 * r['macs'] / r['sec'] / 1e9:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    res = [profile(m, a.batch, a.runs) for m in a.models]
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)
    print("\n".join(table(r) for r in res))


if __name__ == "__main__":
    main()
