"""The GPU speed table of the paper's "about 18% faster" (issue 17, item 5): CSP models against their twins,
inference throughput at fp16 and bf16 autocast, channels_last, fused, batch 1 / 32 / 256, interleaved medians.

    python benchmarks/speed_gpu.py --out docs/results/evidence/speed_gpu.json            # on a CUDA machine
    python benchmarks/speed_gpu.py --device cpu --dtypes bf16 --batch 1 --img 64 --out /tmp/s.json  # a dry run
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from cspnet.io import write_json  # noqa: E402 (after the sys.path line)

DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": None}  # autocast to; fp32: none


def machine(device) -> dict:
    import torch

    from cspnet.bench.harness import machine_info

    info = machine_info(torch.get_num_threads())
    if device.type == "cuda":
        info |= {"gpu": torch.cuda.get_device_name(device), "cuda": torch.version.cuda}
    return info


def forward(model, x, dtype):
    """One inference pass under autocast to `dtype` (None: the model's own fp32)."""
    import torch

    with torch.inference_mode(), torch.autocast(x.device.type, dtype, enabled=dtype is not None):
        return model(x)


def measure(pairs: list[tuple[str, str]], dtypes: list[str], batches: list[int], img: int, device, runs: int) -> list:
    """One row per (pair, dtype, batch): each model's median latency and images/s, and the CSP/twin ratio."""
    import torch

    from cspnet.bench.measure import summarize, time_interleaved
    from cspnet.models import create_model

    rows = []
    for csp, plain in pairs:
        models = {m: create_model(m).eval().fuse().to(device, memory_format=torch.channels_last) for m in (csp, plain)}
        for dt in dtypes:
            dtype = DTYPES[dt] and getattr(torch, DTYPES[dt])
            for b in batches:
                x = torch.randn(b, 3, img, img, device=device).to(memory_format=torch.channels_last)

                fns = {m: partial(forward, model, x, dtype) for m, model in models.items()}
                t = time_interleaved(fns, runs=runs, warmup=5)
                s = {m: summarize(v) for m, v in t.items()}
                ips = {m: b / (s[m]["median_ms"] / 1e3) for m in models}
                rows.append(
                    {
                        "csp": csp, "twin": plain, "dtype": dt, "batch": b, "img": img,
                        "median_ms": {m: s[m]["median_ms"] for m in models},
                        "spread": {m: s[m]["spread"] for m in models},
                        "images_per_s": ips,
                        "throughput_ratio": ips[csp] / ips[plain],
                    }
                )  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
        models.clear()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def main(argv: list[str] | None = None) -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", default="cspresnet50:resnet50", help="CSP:TWIN,... (e.g. add cspdarknet53:darknet53)")
    p.add_argument("--dtypes", default="fp16,bf16")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 32, 256])
    p.add_argument("--img", type=int, default=224)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here; this table is for a GPU (--device cpu only for a dry run)")
    torch.backends.cudnn.benchmark = True
    pairs = [tuple(x.split(":")) for x in args.pairs.split(",")]
    rows = measure(pairs, args.dtypes.split(","), args.batch, args.img, device, args.runs)
    out = {"command": "python benchmarks/speed_gpu.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    out |= {"device": str(device), "machine": machine(device), "rows": rows}
    path = write_json(Path(args.out), out)
    print("->", path)


if __name__ == "__main__":
    main()
