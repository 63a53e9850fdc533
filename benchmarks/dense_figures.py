"""Params and BFLOPs of the dense zoo (DenseNet-201, PeleeNet, their CSP twins) next to the CSPNet paper's figures.

Counts come from torch.utils.flop_counter on the meta device (no compute, so the same on every machine);
BFLOPs = 2 x MACs, as darknet and the CSPNet paper count them. Usage:

    .venv/bin/python benchmarks/dense_figures.py            # the four models
    .venv/bin/python benchmarks/dense_figures.py --variants # plus the paper's fusion / partial-ratio ablation
"""

from __future__ import annotations

import argparse
import platform

import torch
import torchvision

import cspnet
from cspnet.bench.measure import count_macs, count_params

# CSPNet README (WongKinYiu/CrossStagePartialNetworks), ImageNet tables: params (M), BFLOPs, top-1
PAPER = {
    "densenet201": ("DenseNet-201-Elastic", 19.48, 8.77, 77.9),
    "cspdensenet201": ("CSPDenseNet-201-Elastic", 20.17, 7.13, 77.9),
    "peleenet": ("PeleeNet", 2.79, 1.017, 70.7),
    "csppeleenet": ("CSPPeleeNet", 2.83, 0.888, 70.9),
}
VARIANTS = [
    ("csppeleenet", dict(fusion="first")),
    ("csppeleenet", dict(fusion="last")),
    ("csppeleenet", dict(transition_ratio=1.0)),
    ("csppeleenet", dict(partial_ratio=0.25)),
    ("csppeleenet", dict(partial_ratio=0.75)),
    ("cspdensenet201", dict(fusion="first")),
    ("cspdensenet201", dict(fusion="last")),
]


def measure(name: str, img: int, **overrides) -> tuple[float, float]:
    """Params (M) and BFLOPs (2 x MACs, batch 1) at img x img."""
    with torch.device("meta"):
        model = cspnet.create_model(name, **overrides)
    return count_params(model) / 1e6, 2 * count_macs(model, img) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--img", type=int, default=224, help="input size (the paper's tables use 224)")
    parser.add_argument("--variants", action="store_true", help="also the fusion / partial-ratio variants")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, {platform.machine()}, img {args.img}\n")
    print("| model | params (M) | BFLOPs | BFLOPs vs plain | paper row | paper params (M) | paper BFLOPs | vs plain |")
    print("|---|---:|---:|---:|---|---:|---:|---:|")
    for name in PAPER:
        params, bflops = measure(name, args.img)
        row, p_params, p_bflops, _ = PAPER[name]
        twin = cspnet.model_info(name).twin
        if cspnet.model_info(name).is_csp:
            ours = f"{bflops / measure(twin, args.img)[1] - 1:+.0%}"
            theirs = f"{p_bflops / PAPER[twin][2] - 1:+.0%}"
        else:
            ours = theirs = "-"
        print(f"| {name} | {params:.2f} | {bflops:.3f} | {ours} | {row} | {p_params} | {p_bflops} | {theirs} |")
    with torch.device("meta"):
        tv_params = count_params(torchvision.models.densenet201())
        tv_bflops = 2 * count_macs(torchvision.models.densenet201(), args.img) / 1e9
    print(f"| torchvision densenet201 | {tv_params / 1e6:.2f} | {tv_bflops:.3f} | - | | | | |")
    if not args.variants:
        return
    print("\n| model | overrides | params (M) | BFLOPs | vs plain twin |")
    print("|---|---|---:|---:|---:|")
    for name, overrides in VARIANTS:
        params, bflops = measure(name, args.img, **overrides)
        _, plain = measure(cspnet.model_info(name).twin, args.img)
        kw = ", ".join(f"{k}={v!r}" for k, v in overrides.items())
        print(f"| {name} | {kw} | {params:.2f} | {bflops:.3f} | {bflops / plain - 1:+.0%} |")


if __name__ == "__main__":
    main()
