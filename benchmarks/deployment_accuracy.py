"""int8 / bf16 / fp16 accuracy of exported files, measured by `val` on the exported file against the fp32 checkpoint
on a held-out set: the `--accuracy` JSON of benchmarks/deployment.py.

    python benchmarks/deployment_accuracy.py --classifier CKPT --cls-data DATA --detector CKPT --det-data DATA \\
        --out docs/results/deployment_accuracy.json   # --classifier / --detector repeat for several checkpoints

Each row: model, path (runtime:precision), metric (top1 or map50), value, fp32 (the checkpoint's own val), the
export and val commands. int8 is calibrated on the training split (--calib images), never on the val split.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cspnet.bench.harness import machine_info  # noqa: E402
from cspnet.cli import main as cspnet  # noqa: E402
from cspnet.io import write_json  # noqa: E402

PATHS = {  # runtime:precision -> export flags
    "onnxruntime:fp32": ["--format", "onnx"],
    "onnxruntime:int8": ["--format", "onnx", "--int8"],
    "openvino:fp32": ["--format", "openvino"],
    "openvino:int8": ["--format", "openvino", "--int8"],
    "openvino:bf16": ["--format", "openvino", "--bf16"],
}
SUFFIX = {"onnxruntime": ".onnx", "openvino": ".xml"}


def run(argv: list[str]) -> str:
    """`cspnet ARGV` in this process; its stdout (raises on a non-zero exit)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cspnet(argv)
    if rc:
        raise SystemExit(f"`cspnet {' '.join(argv)}` failed ({rc})")
    return buf.getvalue()


def val(task: str, weights: str, data: str, split: str, workers: int) -> tuple[float, list[str]]:
    argv = [task, "val", "--weights", weights, "--data", data, "--split", split, "--workers", str(workers), "--json"]
    if task == "detect":
        argv += ["--project", tempfile.mkdtemp(prefix="val_"), "--name", "v"]
    out = run(argv)
    m = json.loads(next(line for line in out.splitlines() if line.startswith("{")))
    return float(m["top1" if task == "classify" else "map50"]), argv


def measure(task: str, ckpt: str, data: str, calib: str, split: str, args, tmp: Path) -> list[dict]:
    fp32, fp32_cmd = val(task, ckpt, data, split, args.workers)
    isa = machine_info(2)["isa"]
    rows = []
    for path, flags in PATHS.items():
        runtime, precision = path.split(":")
        if precision == "bf16" and "avx512_bf16" not in isa and "amx_bf16" not in isa:
            rows.append({"task": task, "path": path, "skipped": "no AVX-512 BF16 / AMX on this CPU"})
            continue
        out = tmp / f"{Path(ckpt).stem}-{precision}{SUFFIX[runtime]}"
        exp = ["export", "--weights", ckpt, *flags, "--out", str(out), "--runs", "0", "--force"]
        if precision == "int8":
            exp += ["--data", calib, "--calib", str(args.calib)]
        t0 = time.perf_counter()
        run(exp)
        value, cmd = val(task, str(out), data, split, args.workers)
        rows.append(
            {
                "task": task,
                "model": Path(ckpt).name,
                "path": path,
                "metric": "top1" if task == "classify" else "map50",
                "value": value,
                "fp32": fp32,
                "delta": value - fp32,
                "export_cmd": "cspnet " + " ".join(exp),
                "val_cmd": "cspnet " + " ".join(cmd),
                "fp32_val_cmd": "cspnet " + " ".join(fp32_cmd),
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def train_images(data: str, tmp: Path) -> str:
    """A folder of links to the detection train split's images, so int8 never calibrates on the val images."""
    from cspnet.data.detection import open_detection

    out = tmp / "calib"
    out.mkdir()
    for i, r in enumerate(open_detection(data, "train").records):
        (out / f"{i:05d}{Path(r.path).suffix}").symlink_to(Path(r.path).resolve())
    return str(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--classifier", action="append", default=[], help="a classify checkpoint (best.pt / last.pt); repeat"
    )
    p.add_argument("--cls-data", help="its dataset (folder or zip); val on --cls-split, int8 calibrated on train")
    p.add_argument("--cls-split", default="val")
    p.add_argument("--detector", action="append", default=[], help="a detect checkpoint; repeat for several")
    p.add_argument("--det-data", help="its dataset (data.yaml, VOC folder, COCO json)")
    p.add_argument("--det-split", default="val")
    p.add_argument("--calib", type=int, default=256, help="calibration images (from the training split)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--out", default=str(REPO / "docs" / "results" / "deployment_accuracy.json"))
    p.add_argument("--note", action="append", default=[], help="what the models are (a line on the page; repeat)")
    a = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for ckpt in a.classifier:  # the exporter samples calibration images from the folder/zip's train split
            rows += measure("classify", ckpt, a.cls_data, a.cls_data, a.cls_split, a, Path(tmp))
        calib = train_images(a.det_data, Path(tmp)) if a.detector else None
        for ckpt in a.detector:
            rows += measure("detect", ckpt, a.det_data, calib, a.det_split, a, Path(tmp))
    out = {"rows": rows, "machine": machine_info(2), "command": " ".join(["python", *sys.argv]), "notes": a.note}
    write_json(a.out, out)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
