"""A CSP backbone against its plain twin inside torchvision's Faster R-CNN: params, MACs, interleaved latency.

    nice -n 5 env OMP_WAIT_POLICY=PASSIVE python benchmarks/torchvision_backbones.py --out docs/results/torchvision_backbones.md

Both detectors are torchvision's FasterRCNN with a `cspnet.torchvision_backbone` (FPN, P2-P6), random weights with
calibrated BN statistics, eval mode, one image. The RPN keeps a fixed number of proposals (no NMS, zero box deltas:
random weights would make NMS keep a varying number), so the RoI heads cost the same in both and the difference is
the backbone's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models.detection import FasterRCNN

from cspnet.bench.harness import machine_info
from cspnet.bench.measure import count_params, summarize, time_interleaved
from cspnet.interop.torchvision import torchvision_backbone
from cspnet.nn.bn import calibrate_bn


def build(name: str, img: int, proposals: int) -> FasterRCNN:
    model = FasterRCNN(
        torchvision_backbone(name),
        num_classes=91,
        min_size=img,
        max_size=img,
        rpn_pre_nms_top_n_test=proposals,
        rpn_post_nms_top_n_test=proposals,
        rpn_nms_thresh=1.0,  # keep every proposal: the same RoI-head work for both backbones
        box_score_thresh=1.0,  # no detections survive: the post-processing is not what we compare
    )
    calibrate_bn(model.backbone, torch.rand(2, 3, img, img))
    # random box deltas clip many proposals to nothing; zero deltas make the proposals the top-scored anchors
    torch.nn.init.zeros_(model.rpn.head.bbox_pred.weight)
    torch.nn.init.zeros_(model.rpn.head.bbox_pred.bias)
    return model.eval()


@torch.no_grad()
def macs_and_proposals(model: FasterRCNN, x: list[torch.Tensor]) -> tuple[float, float, int]:
    """GMACs of backbone+FPN and of the whole detector on the timed image, and the proposals the RoI heads got."""
    seen = []
    hook = model.rpn.register_forward_hook(lambda m, i, out: seen.append(sum(len(b) for b in out[0])))
    with FlopCounterMode(display=False) as whole:
        model(x)
    hook.remove()
    with FlopCounterMode(display=False) as body:
        model.backbone(model.transform(x)[0].tensors)
    return body.get_total_flops() / 2e9, whole.get_total_flops() / 2e9, seen[0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pairs", nargs="+", default=["cspresnet50:resnet50"], help="csp:plain pairs")
    p.add_argument("--img", type=int, default=512, help="image side (min_size = max_size)")
    p.add_argument("--proposals", type=int, default=1000, help="RPN proposals kept (torchvision's eval default)")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--threads", type=int, default=1, help="1 on a shared CPU: oversubscribed threads time noise")
    p.add_argument("--out", type=Path, default=None, help="write a markdown report (and .json beside it)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    info = machine_info(args.threads)
    load_before = os.getloadavg()
    x = [torch.rand(3, args.img, args.img)]
    rows = []
    for pair in args.pairs:
        names = pair.split(":")
        models = {n: build(n, args.img, args.proposals) for n in names}
        xt = torch.stack(x)
        with torch.inference_mode():
            full = time_interleaved({n: (lambda m=m: m(x)) for n, m in models.items()}, args.runs, 2, rotate=True)
            body = time_interleaved(
                {n: (lambda m=m, xt=xt: m.backbone(xt)) for n, m in models.items()}, args.runs * 2, 2, rotate=True
            )
        for n, m in models.items():
            body_gmacs, gmacs, proposals = macs_and_proposals(m, x)
            rows.append(
                dict(
                    model=n,
                    backbone_params_m=count_params(m.backbone) / 1e6,
                    params_m=count_params(m) / 1e6,
                    backbone_gmacs=body_gmacs,
                    gmacs=gmacs,
                    proposals=proposals,
                    backbone_ms=summarize(body[n])["median_ms"],
                    ms=summarize(full[n])["median_ms"],
                    ms_iqr=[round(summarize(full[n])[k], 1) for k in ("p25_ms", "p75_ms")],
                    backbone_min_ms=summarize(body[n])["min_ms"],
                    min_ms=summarize(full[n])["min_ms"],
                )
            )
    load_after = os.getloadavg()
    cmd = "python benchmarks/torchvision_backbones.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "# CSP backbone vs its plain twin in torchvision's Faster R-CNN",
        "",
        f"Command: `nice -n 5 env OMP_WAIT_POLICY=PASSIVE {cmd.strip()}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
        "",
        f"Machine: {info['cpu']}, {info['logical_cpus']} logical CPUs, ISA {' '.join(info['isa'])}, "
        f"{args.threads} thread(s), torch {info['torch']}, OMP_WAIT_POLICY={info['omp_wait_policy']}. "
        f"Load average before {load_before[0]:.2f}, after {load_after[0]:.2f}: the 2 cores are shared with other "
        "developers' jobs, so compare the ratios of one interleaved run, not the milliseconds.",
        "",
        f"FasterRCNN (FPN P2-P6, 91 classes), {args.img}x{args.img}, batch 1, eval, {args.proposals} proposals kept, "
        f"random weights with calibrated BN; medians (and fastest) of {args.runs} interleaved runs (backbone+FPN: "
        f"{args.runs * 2}). Under heavy load the fastest run is the steadier estimate of the uncontended time.",
        "",
        "| model | backbone+FPN params (M) | detector params (M) | backbone+FPN GMACs | detector GMACs "
        "| proposals | backbone+FPN ms (min) | detector ms (p25-p75, min) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['backbone_params_m']:.2f} | {r['params_m']:.2f} | {r['backbone_gmacs']:.2f} "
            f"| {r['gmacs']:.2f} | {r['proposals']} | {r['backbone_ms']:.0f} ({r['backbone_min_ms']:.0f}) "
            f"| {r['ms']:.0f} ({r['ms_iqr'][0]:.0f}-{r['ms_iqr'][1]:.0f}, {r['min_ms']:.0f}) |"
        )
    lines.append("")
    by = {r["model"]: r for r in rows}
    for pair in args.pairs:
        a, b = (by[n] for n in pair.split(":"))
        lines.append(
            f"- {a['model']} / {b['model']}: backbone+FPN params x{a['backbone_params_m'] / b['backbone_params_m']:.2f}, "
            f"MACs x{a['backbone_gmacs'] / b['backbone_gmacs']:.2f}, latency x{a['backbone_ms'] / b['backbone_ms']:.2f}; "
            f"whole detector params x{a['params_m'] / b['params_m']:.2f}, MACs x{a['gmacs'] / b['gmacs']:.2f}, "
            f"latency x{a['ms'] / b['ms']:.2f}; fastest runs: backbone+FPN x{a['backbone_min_ms'] / b['backbone_min_ms']:.2f}, "
            f"detector x{a['min_ms'] / b['min_ms']:.2f}"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(
            json.dumps(
                dict(machine=info, load=[load_before, load_after], args=vars(args) | {"out": str(args.out)}, rows=rows),
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
