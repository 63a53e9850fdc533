"""What torch.compile (inductor, freezing) makes of timm's model, our unfused model and our fused model.

Prints, per model kind, the C++ kernels inductor generated and its extern calls (oneDNN convolutions with fused
post-ops, binary adds, linear), and whether the sequence of extern calls is the same as for timm's model. Same
sequence: the compiled models run the same convolutions, so a latency gap between them is noise, not the model.

    python benchmarks/compile_check.py cspresnet50 --batch 1
    python benchmarks/compile_check.py cspdarknet53 --batch 8 --kinds timm fused
"""

from __future__ import annotations

import argparse
import collections
import re
import time

import torch

from cspnet.models import create_model, model_info
from cspnet.nn.bn import calibrate_bn

KINDS = ("timm", "unfused", "fused")


def build(name: str, kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "timm":
        import timm

        model = timm.create_model(model_info(name).timm_name or name)
    else:
        model = create_model(name)
    calibrate_bn(model, torch.randn(2, 3, 224, 224))
    model.eval()
    return model.fuse() if kind == "fused" else model


def extern_calls(code: str) -> list[str]:
    """The extern (non-generated) calls of inductor's output code, in order, arguments dropped."""
    return re.findall(r"(torch\.ops\.[\w.]+|extern_kernels\.\w+)\(", code)


def main() -> None:
    from torch._inductor import config as inductor_config
    from torch._inductor.utils import run_and_get_code

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    a = p.parse_args()
    inductor_config.freezing = True  # as `cspnet bench ...@compile`
    x = torch.randn(a.batch, 3, 224, 224)
    seqs = {}
    for kind in a.kinds:
        model = build(a.model, kind)
        torch._dynamo.reset()
        t0 = time.time()
        with torch.no_grad():
            _, codes = run_and_get_code(torch.compile(model), x)
        code = "\n".join(codes)
        seqs[kind] = extern_calls(code)
        kernels = len(re.findall(r"^cpp_fused_\w+ = ", code, re.M))
        counts = dict(collections.Counter(seqs[kind]).most_common())
        same = (
            ""
            if kind == "timm" or "timm" not in seqs
            else f", extern call sequence same as timm's: {seqs[kind] == seqs['timm']}"
        )
        print(
            f"{a.model} batch {a.batch} {kind}: compiled in {time.time() - t0:.0f} s, {kernels} C++ kernels, "
            f"extern calls {counts}{same}",
            flush=True,
        )


if __name__ == "__main__":
    main()
