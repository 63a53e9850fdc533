"""docs/results/deployment.md from `cspnet bench --runtimes` JSON: every CPU runtime, the fastest path, the goals.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/deployment.py --run            # measure (minutes), then write the page
    python benchmarks/deployment.py                                          # write the page from the saved JSON

--run runs the two commands below (classification against timm's fp32 paths, detection against OpenCV DNN's
darknet importer), each interleaved in one process, and saves their JSON beside the page. The goals (issue 20) are
read from the JSON and marked met or not; a goal whose paths are missing or too noisy is marked so. Accuracy
(int8 / bf16 top-1 and mAP@0.5) comes from `val` on the exported files, not from here: pass those figures with
--accuracy FILE.json ({"rows": [{"model", "path", "metric", "value", "fp32"}]}) to add them.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from cspnet.bench.report import runtimes_markdown

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CSPNET_SHARED", REPO.parent / "shared"))
PAGE = REPO / "docs" / "results" / "deployment.md"
STEM = PAGE.with_name("int8_detect.json")  # benchmarks/int8_detect.py
# torch.compile is left out: it compiles for minutes per model and batch on 2 cores, and compiled, our model and
# timm's are one program (docs/results/performance.md, "Why compiling ...")
OURS = "eager,fused,torchscript,onnxruntime,openvino,openvino:bf16,onnxruntime:int8,openvino:int8"
RUNS = {
    "classify": [
        "bench", "cspresnet50", "timm:cspresnet50", "--runtimes", OURS, "--batch", "1", "8", "--threads", "2",
    ],
    "detect": [
        "bench", "yolov4-tiny", "yolov4", "--img", "416", "--runtimes",
        "fused,onnxruntime,openvino,openvino:bf16,onnxruntime:int8,openvino:int8,opencv",
        "--darknet", str(SHARED / "darknet"), "--threads", "2",
    ],
}  # fmt: skip
GOALS = {"classify": 0.5, "detect": 0.4, "fused_vs_opencv": 0.9}
ACC_GOALS = {"top1": 0.5, "map50": 1.0}  # points of difference from fp32


def run(name: str, out: Path) -> None:
    argv = [sys.executable, "-m", "cspnet", *RUNS[name], "--json"]
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    print("$", shlex.join(argv), flush=True)
    res = subprocess.run(argv, capture_output=True, text=True, env=env, check=True)
    result = json.loads(res.stdout)
    result["command"] = f"OMP_WAIT_POLICY={env['OMP_WAIT_POLICY']} cspnet {shlex.join(RUNS[name])}"
    out.write_text(json.dumps(result, indent=2))


def _verdict(ratio: float | None, noise: float | None, goal: float) -> str:
    if ratio is None:
        return "not measured"
    if noise is not None:
        return f"~{ratio:.2f} (noisy: no result)"
    return f"{ratio:.2f}: {'met' if ratio <= goal else 'not met'}"


def classify_goals(result: dict) -> list[str]:
    """Our fastest path at any precision over timm's fastest fp32 path, per batch and model."""
    lines = []
    for g in result["groups"]:
        rows = list(g["rows"].values())
        for model in sorted({r["model"] for r in rows if r["source"] == "cspnet"}):
            ours = min((r for r in rows if r["model"] == model), key=lambda r: r["median_ms"])
            ratio = ours.get("vs_timm_best")
            goal = _verdict(ratio, ours.get("vs_timm_best_noise"), GOALS["classify"])
            lines.append(
                f"| {model}, batch {g['batch']} | {ours['runtime']} {ours['precision']} vs "
                f"{ours.get('timm_best_ref', 'timm (not measured)')} | <= {GOALS['classify']} | {goal} |"
            )
    return lines


def detect_goals(result: dict) -> list[str]:
    """Our fastest path over OpenCV DNN, and the eager fused path over OpenCV DNN, per model."""
    lines = []
    for g in result["groups"]:
        rows = list(g["rows"].values())
        for model in sorted({r["model"] for r in rows}):
            mine = [r for r in rows if r["model"] == model and r["runtime"] != "opencv"]
            if not mine:
                continue
            best = min(mine, key=lambda r: r["median_ms"])
            fused = next((r for r in mine if r["runtime"] == "fused" and r["precision"] == "fp32"), {})
            for what, r, goal in (
                (f"best ({best['runtime']} {best['precision']})", best, GOALS["detect"]),
                ("eager fused fp32", fused, GOALS["fused_vs_opencv"]),
            ):
                verdict = _verdict(r.get("vs_opencv"), r.get("vs_opencv_noise"), goal)
                lines.append(f"| {model}, batch {g['batch']} | {what} vs OpenCV DNN | <= {goal} | {verdict} |")
    return lines


def spread_lines(rows: list[dict]) -> list[str]:
    """Per task and path scored on several checkpoints: the mean difference from fp32 and its range, in points."""
    by: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        if "value" in r:
            k = 100.0 if r["metric"] == "map50" else 1.0
            by.setdefault((r["metric"], r["path"]), []).append((r["value"] - r["fp32"]) * k)
    cells = [
        f"{path} {metric} {sum(d) / len(d):+.2f} ({min(d):+.2f} to {max(d):+.2f})"
        for (metric, path), d in by.items()
        if len(d) > 1
    ]
    if not cells:
        return []
    return ["", f"Difference from fp32 over the checkpoints of each path, mean (range), points: {'; '.join(cells)}."]


def stem_lines(study: dict | None) -> list[str]:
    """benchmarks/int8_detect.py: a detector's int8 mAP@0.5 with its stem conv quantized and kept float."""
    if not study:
        return []
    n = len(study["rows"])
    cells = [
        f"{k} {100 * v['mean']:+.2f} (mean |.| {100 * v['mean_abs']:.2f}, worst {100 * v['worst']:+.2f})"
        for k, v in study["summary"].items()
    ]
    return [
        "",
        f"Which convs int8 leaves float in a detector: besides the tail (decode, NMS), the stem conv. On the {n} "
        f"detectors above, difference from fp32 in mAP@0.5 points, mean over the checkpoints: {'; '.join(cells)}. "
        f"Command: `{study['command']}` ([int8_detect.json](int8_detect.json)).",
    ]


def page(results: dict[str, dict], accuracy: dict | None, stem: dict | None = None) -> str:
    out = [
        "# Deployment: every CPU runtime, measured interleaved",
        "",
        "Generated by `python benchmarks/deployment.py` from the JSON of these commands (random weights, BN "
        "calibrated; int8 calibrated on random images, which sets its speed, not its accuracy). torch.compile is not "
        "among the paths: it compiles for minutes per model and batch on 2 cores, and compiled, our model and timm's "
        "are one program ([performance.md](performance.md)). Exported, they are one program too: our cspresnet50 and "
        "timm's give the same ONNX graph, op for op (`tests/test_timm_parity.py::test_onnx_export_is_timms_graph`), "
        "so between their onnxruntime or openvino rows of one precision the difference is the measurement's spread. "
        "No GPU was lent to this task: no TensorRT or CUDA row.",
        "",
    ]
    out += [f"    {r.get('command', '(command not recorded in the JSON)')}" for r in results.values()]
    out += ["", "## Goals", "", "| case | paths | goal (ratio of medians) | measured |", "|---|---|---|---|"]
    if "classify" in results:
        out += classify_goals(results["classify"])
    if "detect" in results:
        out += detect_goals(results["detect"])
    out += ["", "## Accuracy of the exported files (`val` on each file)", ""]
    if accuracy:
        out += [
            "Each exported file scored by `val` against the fp32 checkpoint on the same held-out split, in points "
            f"(top-1 %, mAP@0.5 x 100); goals: top-1 within {ACC_GOALS['top1']}, mAP@0.5 within {ACC_GOALS['map50']} "
            f"of fp32. Command: `{accuracy.get('command', '?')}`; per row its export and val commands are in the JSON.",
            "",
            "| model | path | metric | value | fp32 | difference | goal |",
            "|---|---|---|---:|---:|---:|---|",
        ]
        for r in accuracy["rows"]:
            if "value" not in r:
                out.append(f"| {r.get('model', r['task'])} | {r['path']} | | | | | not measured: {r.get('skipped')} |")
                continue
            k = 100.0 if r["metric"] == "map50" else 1.0
            d = (r["value"] - r["fp32"]) * k
            ok = "met" if abs(d) <= ACC_GOALS[r["metric"]] else "not met"
            out.append(
                f"| {r['model']} | {r['path']} | {r['metric']} | {r['value'] * k:.2f} | {r['fp32'] * k:.2f} | "
                f"{d:+.2f} | {ok} |"
            )
        out += spread_lines(accuracy["rows"])
        out += stem_lines(stem)
        out += ["", *accuracy.get("notes", [])]
    else:
        out.append("Not measured yet: export each path with `cspnet export` and run `val` on the file.")
    for name, result in results.items():
        out += ["", f"## {name.capitalize()}", "", runtimes_markdown(result)]
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="store_true", help="measure first (the commands above), else read the JSON")
    p.add_argument("--only", choices=sorted(RUNS), default=None, help="with --run: one of the two measurements")
    p.add_argument("--dir", type=Path, default=PAGE.with_suffix(""), help="where the JSON files are kept")
    p.add_argument("--accuracy", type=Path, default=None, help="val results of the exported files (JSON)")
    p.add_argument("--md", type=Path, default=PAGE)
    args = p.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    if args.run:
        for name in [args.only] if args.only else RUNS:
            run(name, args.dir / f"{name}.json")
    results = {n: json.loads((args.dir / f"{n}.json").read_text()) for n in RUNS if (args.dir / f"{n}.json").is_file()}
    if not results:
        p.error(f"no JSON in {args.dir}; measure with --run")
    accuracy = json.loads(args.accuracy.read_text()) if args.accuracy else None
    stem = json.loads(STEM.read_text()) if STEM.is_file() else None
    args.md.write_text(page(results, accuracy, stem))
    print(f"wrote {args.md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
