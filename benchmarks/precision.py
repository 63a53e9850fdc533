"""Reduced precision on CPU: bf16 (PyTorch) and int8 (onnxruntime static PTQ) against fp32.

Accuracy: a CIFAR-10 checkpoint from `cspnet classify train` on the CIFAR-10 test split (top-1 of each
precision, top-1 agreement with fp32, max logit difference). Speed: cspresnet50 at 224x224, batch 1,
random weights, interleaved in one process.

    python benchmarks/precision.py --weights runs/bench_cifar10/cspresnet10/weights/best.pt --out /tmp/precision.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch

from cspnet.bench.harness import machine_info
from cspnet.bench.measure import time_interleaved
from cspnet.deploy.export import export_onnx, load_runner, prepare, quantize_onnx_int8
from cspnet.models import create_model
from cspnet.nn.bn import calibrate_bn

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "cifar10.zip"


def load_checkpoint(path: str) -> tuple[torch.nn.Module, dict]:
    """A trainer checkpoint (EMA weights preferred) -> the eval model and its training args."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    args = ckpt.get("args", {})
    sd = ckpt.get("ema") or ckpt["model"]
    kw = {"small_input": True} if args.get("small_input") else {}
    model = create_model(args["model"], num_classes=sd["head.fc.weight"].shape[0], **kw)
    model.load_state_dict(sd)
    return model.eval(), args


def images(split: str, img: int, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    from cspnet.data.datasets import open_split
    from cspnet.data.transforms import eval_transform

    ds = open_split(DATA, split, eval_transform(img)).subset(n)
    xs, ys = zip(*(ds[i] for i in range(len(ds))))
    return torch.stack(xs), torch.tensor(ys)


@torch.inference_mode()
def logits(fn, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    return torch.cat([torch.as_tensor(fn(x[i : i + batch])).float() for i in range(0, len(x), batch)])


def accuracy_table(weights: str, n_test: int | None, n_calib: int) -> dict:
    model, args = load_checkpoint(weights)
    x, y = images("test", args["img"], n_test)
    calib, _ = images("train", args["img"], n_calib)
    out = {"checkpoint": weights, "model": args["model"], "img": args["img"], "test_images": len(x)}
    ref = logits(model, x)
    bf16 = create_model(args["model"], num_classes=model.num_classes).eval()
    bf16.load_state_dict(model.state_dict())
    bf16 = bf16.to(torch.bfloat16)
    results = {"fp32 (PyTorch)": ref, "bf16 (PyTorch)": logits(lambda b: bf16(b.to(torch.bfloat16)), x)}
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(prepare(model), Path(tmp) / "m.onnx", x[:2])
        int8 = quantize_onnx_int8(fp32, Path(tmp) / "m.int8.onnx", calib)
        results["fp32 (ONNX Runtime)"] = logits(load_runner(fp32, "onnx"), x)
        results["int8 (ONNX Runtime, static PTQ)"] = logits(load_runner(int8, "onnx"), x)
    rows = {}
    for k, v in results.items():
        rows[k] = {
            "top1": float((v.argmax(1) == y).float().mean()),
            "agree_fp32": float((v.argmax(1) == ref.argmax(1)).float().mean()),
            "max_logit_diff": float((v - ref).abs().max()),
        }
    out["rows"] = rows
    return out


def speed_table(name: str, runs: int) -> dict:
    torch.manual_seed(0)
    model = create_model(name).eval()
    calibrate_bn(model, torch.randn(2, 3, 224, 224))
    x = torch.randn(1, 3, 224, 224)
    bf16 = create_model(name).eval()
    bf16.load_state_dict(model.state_dict())
    bf16 = bf16.to(torch.bfloat16)
    xb = x.to(torch.bfloat16)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(prepare(create_model(name).eval()), Path(tmp) / "m.onnx", x)
        int8 = quantize_onnx_int8(fp32, Path(tmp) / "m.int8.onnx", torch.randn(16, 3, 224, 224))
        ort32, ort8 = load_runner(fp32, "onnx"), load_runner(int8, "onnx")
        fns = {
            "fp32 PyTorch eager": lambda: model(x),
            "bf16 PyTorch eager": lambda: bf16(xb),
            "fp32 ONNX Runtime": lambda: ort32(x),
            "int8 ONNX Runtime": lambda: ort8(x),
        }
        with torch.inference_mode():
            times = time_interleaved(fns, runs=runs, warmup=2)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    return {"model": name, "batch": 1, "img": 224, "runs": runs, "median_ms": med}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default=None, help="CIFAR-10 checkpoint from `cspnet classify train`")
    p.add_argument("--test-images", type=int, default=0, help="0: the whole test split")
    p.add_argument("--calib-images", type=int, default=512)
    p.add_argument("--speed-model", default="cspresnet50")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--out", default="precision.json")
    a = p.parse_args()
    res = {"machine": machine_info(torch.get_num_threads())}
    if a.weights:
        res["accuracy"] = accuracy_table(a.weights, a.test_images or None, a.calib_images)
    res["speed"] = speed_table(a.speed_model, a.runs)
    Path(a.out).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
