"""Which of a detector's convs int8 may quantize: mAP@0.5 of each int8 file against its fp32 checkpoint, with the
stem (first) conv quantized and with it kept float (the library's choice: cspnet.deploy.onnx_export.float_nodes).

    python benchmarks/int8_detect.py --data ../shared/data/raccoon CKPT [CKPT ...] --out docs/results/int8_detect.json

Both variants leave the tail (decode, NMS) float, calibrate on the same images of the training split and are scored
by `cspnet detect val` on the same val images as the fp32 checkpoint, so each difference is the file's. onnxruntime
(quantize_static, MinMax, QDQ) and OpenVINO (NNCF, MIXED preset).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cspnet.bench.harness import machine_info  # noqa: E402
from cspnet.cli import main as cspnet  # noqa: E402
from cspnet.deploy import onnx_export, openvino_export  # noqa: E402
from cspnet.deploy.cli import load_calibration  # noqa: E402
from cspnet.io import write_json  # noqa: E402

VARIANTS = ("stem int8", "stem float")  # the second is the library's


def run(argv: list[str]) -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        if cspnet(argv):
            raise SystemExit(f"`cspnet {' '.join(argv)}` failed")
    return buf.getvalue()


def map50(weights: Path, data: str, split: str, tmp: Path) -> float:
    out = run(["detect", "val", "--weights", str(weights), "--data", data, "--split", split, "--workers", "0",
               "--json", "--project", str(tmp / "val"), "--name", "v", "--exist-ok"])  # fmt: skip
    return float(json.loads(next(line for line in out.splitlines() if line.startswith("{")))["map50"])


def meta_of(onnx_path: Path) -> dict:
    """The cspnet metadata of an exported ONNX file (val reads the task, classes and image size from it)."""
    import onnx

    props = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    return json.loads(props[onnx_export.META_KEY])


def quantize_ort(fp32: Path, out: Path, calib, stem_float: bool) -> None:
    onnx_export.quantize_onnx_int8(fp32, out, calib, detector=True, float_stem=stem_float)
    onnx_export.set_metadata(out, meta_of(fp32) | {"precision": "int8"})


def quantize_ov(fp32: Path, out: Path, calib, stem_float: bool) -> None:
    import openvino as ov

    model = openvino_export.quantize_nncf(ov.convert_model(str(fp32)), calib, detector=True, float_stem=stem_float)
    meta = meta_of(fp32) | {"format": "openvino", "precision": "int8"}
    model.set_rt_info(json.dumps(meta), openvino_export.META_KEY)
    ov.save_model(model, str(out))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="+", help="detect checkpoints")
    p.add_argument("--data", required=True, help="their dataset (val on --split, calibration on its train split)")
    p.add_argument("--split", default="val")
    p.add_argument("--calib", type=int, default=256)
    p.add_argument("--out", default=str(REPO / "docs" / "results" / "int8_detect.json"))
    a = p.parse_args(argv)
    from cspnet.data.detection import open_detection

    rows = []
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        (tmp / "calib").mkdir()
        for i, r in enumerate(open_detection(a.data, "train").records):  # never the val images
            (tmp / "calib" / f"{i:05d}{Path(r.path).suffix}").symlink_to(Path(r.path).resolve())
        for ck in map(Path, a.checkpoints):
            fp32 = tmp / f"{ck.stem}.onnx"
            run(["export", "--weights", str(ck), "--format", "onnx", "--out", str(fp32), "--runs", "0", "--force"])
            img = meta_of(fp32)["img_size"]
            calib = load_calibration(tmp / "calib", "detect", img, a.calib)
            base = map50(fp32, a.data, a.split, tmp)
            row = {"model": ck.name, "fp32": base}
            for runtime, quantize, suffix in (
                ("onnxruntime", quantize_ort, ".onnx"),
                ("openvino", quantize_ov, ".xml"),
            ):
                for v in VARIANTS:
                    f = tmp / f"{ck.stem}-{runtime}-{v.replace(' ', '-')}{suffix}"
                    quantize(fp32, f, calib, v == "stem float")
                    row[f"{runtime}: {v}"] = map50(f, a.data, a.split, tmp) - base
            rows.append(row)
            print(json.dumps(row), flush=True)
    keys = [k for k in rows[0] if ":" in k]
    summary = {k: {"mean": statistics.fmean(r[k] for r in rows), "mean_abs": statistics.fmean(abs(r[k]) for r in rows),
                   "worst": max((r[k] for r in rows), key=abs)} for k in keys}  # fmt: skip
    write_json(a.out, {"rows": rows, "summary": summary, "machine": machine_info(2),
                       "command": " ".join(["python", *sys.argv])})  # fmt: skip
    for k, s in summary.items():
        print(f"{k}: difference from fp32 mean {100 * s['mean']:+.2f}, mean |.| {100 * s['mean_abs']:.2f}, "
              f"worst {100 * s['worst']:+.2f} mAP@0.5 points over {len(rows)} checkpoints")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
