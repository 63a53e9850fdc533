"""A/B of the fused path against an earlier revision of cspnet/nn/fuse.py, interleaved in one process.

    python benchmarks/fuse_ab.py --rev fc7cb57 cspresnet50 cspresnext50 cspdarknet53

The old fuse.py is read with `git show REV:cspnet/nn/fuse.py` (cspnet/deploy/fuse.py before it moved) and imported
beside the current one; both fuse the same model (same weights) and are timed round-robin at batch 1, 224x224;
prints the medians and new/old.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def old_fuse(rev: str):
    for where in ("cspnet/nn/fuse.py", "cspnet/deploy/fuse.py"):  # its home since, and before, the move to nn/
        got = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:{where}"], capture_output=True, text=True)
        if got.returncode == 0:
            break
    else:
        sys.exit(f"revision {rev} has no fuse.py: {got.stderr.strip()}")
    src = got.stdout
    path = Path(tempfile.mkdtemp()) / "fuse_old.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("fuse_old", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["fuse_old"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--rev", required=True, help="git revision of the old fuse.py")
    p.add_argument("--runs", type=int, default=25)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--img", type=int, default=224)
    a = p.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from cspnet.bench.harness import machine_info
    from cspnet.deploy.fuse import fuse_model
    from cspnet.models import create_model

    torch.set_num_threads(a.threads)
    old = old_fuse(a.rev)
    print(machine_info(a.threads))
    for name in a.models:
        m = create_model(name).eval()
        fused = {"old": old.fuse_model(copy.deepcopy(m)), "new": fuse_model(copy.deepcopy(m))}
        x = torch.randn(1, 3, a.img, a.img)
        times = {k: [] for k in fused}
        with torch.inference_mode():
            for f in fused.values():
                f(x), f(x), f(x)
            for i in range(a.runs):
                for k in ("old", "new") if i % 2 else ("new", "old"):
                    t = time.perf_counter()
                    fused[k](x)
                    times[k].append(time.perf_counter() - t)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        print(f"{name}: old {med['old']:.2f} ms, new {med['new']:.2f} ms, new/old {med['new'] / med['old']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
