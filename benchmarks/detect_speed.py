"""Detector latency: our fused native YOLOv4 models against OpenCV DNN's darknet importer, same cfg and weights.

    OMP_WAIT_POLICY=PASSIVE nice -n 5 python benchmarks/detect_speed.py --md docs/results/detection_speed.md

For each cfg (default yolov4-tiny and yolov4, from ../shared/darknet): random weights (BN statistics from one
random batch, so activations have a trained net's scale and no denormals) written as `.weights`; then
  - cspnet: `from_darknet(cfg, weights).fuse()` (the native model, fused by cspnet.deploy.fuse), eager fp32;
  - opencv: `cv2.dnn.readNetFromDarknet(cfg, weights)`, default backend and target (what its users run);
  - cspnet-ort: our ONNX export of the fused model (decode included) in onnxruntime, all graph optimisations;
  - optionally (--cfg-model) the generic cfg model (cspnet.interop.darknet.DarknetModel), the issue's old baseline.
Outputs are checked against OpenCV's before timing. All run in one process, interleaved round-robin with a rotating
start, batch 1, fp32, the same thread count; the table gives medians, the p25-p75 range and ratios of medians.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from cspnet import from_darknet
from cspnet.bench.harness import machine_info
from cspnet.bench.measure import load_average, summarize, time_interleaved
from cspnet.interop.darknet.weights import random_weights

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CSPNET_SHARED", REPO.parent / "shared"))


def random_darknet(cfg: Path, img: int, path: Path) -> Path:
    """`.weights` for `cfg` in the well-conditioned random regime (cspnet.interop.darknet.random_weights), where
    OpenCV's outputs and ours agree to 1e-5, so the check below means something."""
    return random_weights(cfg, path, img)[1]


def opencv_net(cfg: Path, weights: Path):
    import cv2

    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    names = net.getUnconnectedOutLayersNames()
    return net, names


def opencv_rows(net, names, x: np.ndarray) -> np.ndarray:
    net.setInput(x)
    outs = net.forward(names)
    return np.concatenate(sorted(outs, key=lambda o: -o.shape[0]), 0)


def check_against_opencv(out: torch.Tensor, ref: np.ndarray, img: int) -> float:
    """Max |difference| of objectness and normalised boxes between our rows and OpenCV's (same order)."""
    y = out[0].clone()
    y[:, :4] /= img
    return float((y[:, :5] - torch.from_numpy(ref[:, :5])).abs().max())


def lscpu_isa() -> str:
    try:
        flags = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "?"
    line = next((ln for ln in flags.splitlines() if ln.startswith("Flags:")), "")
    have = set(line.split()[1:])
    avx512 = sorted(f for f in have if f.startswith("avx512"))
    bf16 = "avx512_bf16" in have or "amx_bf16" in have
    model = next((ln.split(":", 1)[1].strip() for ln in flags.splitlines() if ln.startswith("Model name")), "?")
    return f"{model}; {' '.join(avx512) or 'no AVX-512'}; {'BF16' if bf16 else 'no BF16'}"


def profile_shares(fn, top: int = 5) -> dict[str, float]:
    """Share of self CPU time per op over two calls of `fn` (torch.profiler), the `top` largest."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
        fn()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    rows = sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]
    return {e.key: e.self_cpu_time_total / total for e in rows}


def bench_one(
    stem: str, img: int, runs: int, threads: int, ort: bool, cfg_model: bool, tmp: Path, profile: bool = False
) -> dict:
    import cv2

    cfg = SHARED / "darknet" / f"{stem}.cfg"
    weights = random_darknet(cfg, img, tmp / f"{stem}.weights")
    ours = from_darknet(cfg, weights, verify=False).fuse()
    net, names = opencv_net(cfg, weights)
    x = torch.randn(1, 3, img, img, generator=torch.Generator().manual_seed(1))
    xn = x.numpy()
    with torch.inference_mode():
        out = ours(x)
    diff = check_against_opencv(out, opencv_rows(net, names, xn), img)

    def run_ours():
        with torch.inference_mode():
            ours(x)

    fns = {"cspnet (fused)": run_ours, "opencv": lambda: opencv_rows(net, names, xn)}
    if ort:
        from cspnet.deploy.export import export_onnx, ort_session

        path = export_onnx(ours, tmp / f"{stem}.onnx", x)
        sess = ort_session(path, threads)
        name = sess.get_inputs()[0].name
        ort_out = sess.run(None, {name: xn})[0]
        fns["cspnet onnxruntime"] = lambda: sess.run(None, {name: xn})
    if cfg_model:
        dk = from_darknet(cfg, weights, native=False)

        def run_dk():
            with torch.inference_mode():
                dk(x)

        fns["cspnet cfg model"] = run_dk
    load_before = load_average()
    times = time_interleaved(fns, runs=runs, warmup=2, rotate=True)
    stats = {k: summarize(v) for k, v in times.items()}
    cv_med = stats["opencv"]["median_ms"]
    result = {
        "model": stem,
        "img": img,
        "threads": threads,
        "runs": runs,
        "max_abs_diff_vs_opencv": diff,
        "load_before": load_before,
        "load_after": load_average(),
        "opencv": cv2.__version__,
        "stats": stats,
        "ratio_vs_opencv": {k: s["median_ms"] / cv_med for k, s in stats.items()},
    }
    if ort:
        result["max_abs_diff_ort_vs_torch"] = float(np.abs(ort_out - out.numpy()).max())
    if profile:
        result["profile_cspnet_fused"] = profile_shares(run_ours)
    return result


def markdown(results: list[dict], meta: dict) -> str:
    lines = [
        "# Detection speed: fused native YOLOv4 vs OpenCV DNN (CPU, batch 1, fp32)",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"Machine: {meta['isa']}; {meta['logical_cpus']} logical CPUs, {meta['threads']} threads for every path; "
        f"torch {meta['torch']}, OpenCV {results[0]['opencv']}, onnxruntime {meta.get('onnxruntime', '-')}; "
        f"OMP_WAIT_POLICY={meta['omp_wait_policy']}.",
        "",
        f"Load: {meta['uptime']}. If the load average is above the thread count, other jobs shared the cores and "
        "absolute times are inflated and noisy; the paths are timed interleaved round-robin (rotating start) in one "
        "process, so the ratios of medians are the result.",
        "",
        "Same cfg (../shared/darknet), same random `.weights` (see `random_darknet` in the script), same input for "
        "every path. `ratio` = median / OpenCV's median (goal: cspnet fused <= 0.9).",
        "",
        "| model | img | path | median ms | p25-p75 ms | ratio vs OpenCV |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        for k, s in r["stats"].items():
            lines.append(
                f"| {r['model']} | {r['img']} | {k} | {s['median_ms']:.1f} | {s['p25_ms']:.1f}-{s['p75_ms']:.1f} | "
                f"{r['ratio_vs_opencv'][k]:.2f} |"
            )
    lines += ["", "Checks before timing (max |difference|, objectness and boxes normalised to the input):", ""]
    for r in results:
        line = f"- {r['model']}: cspnet vs OpenCV {r['max_abs_diff_vs_opencv']:.1e}"
        if "max_abs_diff_ort_vs_torch" in r:
            line += f"; onnxruntime vs PyTorch (pixels) {r['max_abs_diff_ort_vs_torch']:.1e}"
        line += f"; {r['runs']} rounds; load {r['load_before']:.1f} before, {r['load_after']:.1f} after"
        lines.append(line)
    for r in results:
        if "profile_cspnet_fused" in r:
            shares = ", ".join(f"{k} {v:.0%}" for k, v in r["profile_cspnet_fused"].items())
            lines.append(f"- profile of cspnet (fused) {r['model']}, self CPU time: {shares}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["yolov4-tiny", "yolov4"], help="cfg stems in ../shared/darknet")
    p.add_argument("--img", type=int, default=416)
    p.add_argument("--runs", type=int, default=20, help="interleaved rounds per model")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-ort", action="store_true", help="skip onnxruntime")
    p.add_argument("--cfg-model", action="store_true", help="also time the generic cfg model")
    p.add_argument("--profile", action="store_true", help="also profile our fused model (top ops by self CPU time)")
    p.add_argument("--md", type=Path, default=None, help="write the markdown table here (and .json beside it)")
    args = p.parse_args(argv)
    import cv2

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    results = []
    with tempfile.TemporaryDirectory() as d:
        for stem in args.models:
            r = bench_one(
                stem, args.img, args.runs, args.threads, not args.no_ort, args.cfg_model, Path(d), args.profile
            )
            results.append(r)
            print(json.dumps(r, indent=2), flush=True)
    meta = machine_info(args.threads)
    meta["isa"] = lscpu_isa()
    meta["uptime"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    meta["command"] = "OMP_WAIT_POLICY=PASSIVE nice -n 5 python " + shlex.join(
        ["benchmarks/detect_speed.py", *sys.argv[1:]]
    )
    meta["python"] = platform.python_version()
    md = markdown(results, meta)
    print(md)
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(md)
        args.md.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
