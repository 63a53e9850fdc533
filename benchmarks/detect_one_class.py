"""Does the untrained one-class logit explain the detection gap? Re-score the detect_recipe screen's checkpoints.

With one class the loss has no class term, so the class logit is never trained; before commit 8116c13 every score
was objectness x sigmoid(that logit) (detect_raccoon.md's runs), since then it is the objectness alone. The same
checkpoint scored both ways isolates the effect: `head.one_class_logit = True` is the old scoring exactly.

    python benchmarks/detect_one_class.py      # after detect_recipe.py screen; reads runs/detect_recipe
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from cspnet.io import write_json  # noqa: E402 (after the sys.path line)

OUT = REPO / "docs" / "results" / "evidence" / "detect_one_class.json"


def rescore(last: Path, data: str, img: int) -> dict:
    from cspnet.engine.api import Model

    m = Model(last)
    out = {}
    for name, flag in (("objectness", False), ("objectness_x_class_logit", True)):
        m.module.head.one_class_logit = flag
        r = m.val(data, img=img, workers=0)
        out[name] = {"map50": r["map50"], "map": r["map"]}
    return out


def main(argv: list[str] | None = None) -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--project", default="runs/detect_recipe")
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "raccoon"))
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    units = REPO / "docs" / "results" / "evidence" / "detect_recipe"
    rows = []
    for path in sorted(units.glob("*.json")):
        u = json.loads(path.read_text())
        last = Path(args.project) / u["setting"] / u["model"] / f"seed{u['seed']}" / "weights" / "last.pt"
        if u["data"] != "raccoon" or u["diverged"] or not last.is_file():
            continue
        r = rescore(last, args.data, u["recipe"]["detect"]["img"])
        r |= {"setting": u["setting"], "model": u["model"], "seed": u["seed"], "recorded_map50": u["final_map50"]}
        r["reproduces_recorded"] = abs(r["objectness"]["map50"] - u["final_map50"]) < 1e-6  # the same weights
        rows.append(r)
        print(r, flush=True)
    deltas = [r["objectness_x_class_logit"]["map50"] - r["objectness"]["map50"] for r in rows]
    out = {
        "command": "python benchmarks/detect_one_class.py",
        "units": rows,
        "map50_old_minus_new": {
            "n": len(deltas),
            "mean": statistics.fmean(deltas) if deltas else None,
            "min": min(deltas, default=None),
            "max": max(deltas, default=None),
        },
    }
    write_json(OUT, out)
    print(out["map50_old_minus_new"], "->", OUT)


if __name__ == "__main__":
    main()
