"""Generated result pages say what their committed JSON says: docs/results/evidence.md is what
`python benchmarks/evidence.py` renders now (a JSON committed without regenerating the page fails here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_evidence_page_is_rendered_from_the_committed_json():
    evidence = load("evidence")
    assert evidence.PAGE.read_text() == evidence.render(), "run: python benchmarks/evidence.py"


def test_evidence_summary_reads_every_committed_run():
    """classify.json (what the page renders) holds every committed run JSON with its whole curve."""
    import json

    evc = load("evidence_classify")
    committed = json.loads((evc.RESULTS.parent / "classify.json").read_text())
    now = evc.summary()
    for model in evc.PAIR:
        assert committed["models"][model]["final_top1"] == now["models"][model]["final_top1"], (
            "run: python benchmarks/evidence_classify.py report && python benchmarks/evidence.py"
        )
        assert committed["models"][model]["epochs"] == now["models"][model]["epochs"]


def test_grid_summary_is_the_committed_runs():
    """ablate.json (the powered grid on the page) is what the committed grid and reference runs give now."""
    import json

    eva = load("evidence_ablate")
    committed = json.loads((eva.RESULTS.parent / "ablate.json").read_text())
    now = json.loads(json.dumps(eva.summary()))  # the same float and key forms as the file
    assert committed == now, "run: python benchmarks/evidence_ablate.py report && python benchmarks/evidence.py"
