"""Generated result pages say what their committed JSON says: docs/results/evidence.md is what
`python benchmarks/evidence.py` renders now (a JSON committed without regenerating the page fails here)."""

from __future__ import annotations

from pathlib import Path

from conftest import load_benchmark as load

REPO = Path(__file__).resolve().parents[1]


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


def test_detection_summary_is_the_committed_runs_and_schedule():
    """detect_recipe.json holds what the committed units give now, and the schedule the page's header prints is the
    one detect_recipe.py runs."""
    import json

    drc = load("detect_recipe")
    committed = json.loads((drc.RESULTS.parent / "detect_recipe.json").read_text())
    assert committed["schedule"] == {"cosine_until": drc.COSINE, "cap": drc.CAP, "window": drc.WINDOW,
                                     "points": drc.PLATEAU_POINTS}  # fmt: skip
    now = json.loads(json.dumps(drc.summary()))
    assert committed["settings"] == now["settings"], "run: python benchmarks/detect_recipe.py report"
    page = load("evidence").render()
    assert f"at most {drc.CAP} epochs" in page and f"by epoch {drc.COSINE}," in page


def test_detection_plateau_verdict_follows_the_gap_and_its_se():
    """The page calls the detection gap closed only with 3 seeds a twin and |Δ| < 2·SE, and never at the floor."""
    evidence = load("evidence")
    pair = ["yolov4-s", "yolov4-darknet53-s"]

    def setting(n: int, gap: float, se: float, mean: float = 0.5) -> dict:
        twin = {"n": n, "mean": mean, "std": 0.05, "se": 0.03}
        runs = {f"{m} seed {k}": {"holds": k > 0, "move": 0.5, "rise_last3": 1.5} for m in pair for k in range(n)}
        return {pair[0]: twin, pair[1]: twin, "gap": {"delta": gap, "se": se}, "plateau": runs, "epochs": [70, 100]}

    assert "not shown yet" in evidence.plateau_verdict(setting(2, 0.01, 0.04), pair)
    assert "gap is closed" in evidence.plateau_verdict(setting(3, 0.05, 0.04), pair)
    assert "CSP behind" in evidence.plateau_verdict(setting(3, -0.1, 0.04), pair)
    assert "floor" in evidence.plateau_verdict(setting(3, 0.001, 0.001, mean=0.004), pair)
    row = evidence.plateau_row("raccoon", setting(3, 0.05, 0.04), pair)
    assert "| 4 of 6 (the other 2 ran to the 100-epoch cap) |" in row and "CSP 2: +1.5" in row


def test_detection_tail_reads_the_curve():
    """Each plateau run's last-3-epoch move and its mAP where the lr is held come from its curve, in points."""
    rec = load("detect_recipe")
    c = [0.01 * k for k in range(1, 61)]  # one point a epoch, 60 epochs
    t = rec.tail(c)
    assert (
        round(t["rise_last3"], 6) == 3.0 and round(t["at_cosine_end"], 6) == rec.COSINE and round(t["final"], 6) == 60
    )


def test_resume_script_names_parts_its_scripts_take():
    """benchmarks/evidence_resume.sh (the next sitting's one command) parses, and each study part it starts exists."""
    import re
    import subprocess
    import sys

    script = REPO / "benchmarks" / "evidence_resume.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    calls = re.findall(r"benchmarks/(\w+)\.py (\w+)", script.read_text())
    assert {name for name, _ in calls} == {"evidence_classify", "evidence_ablate", "detect_recipe"}
    for name, part in calls:
        usage = subprocess.run(
            [sys.executable, str(REPO / "benchmarks" / f"{name}.py"), "--help"], capture_output=True, text=True
        )
        assert usage.returncode == 0 and re.search(rf"\{{[^}}]*\b{part}\b", usage.stdout), (name, part)


def test_gpu_speed_table_rows_and_page(tmp_path):
    """benchmarks/speed_gpu.py (dry run on the CPU): a row per pair, dtype and batch whose ratio is its images/s
    ratio; the page renders a CUDA run's rows and its verdict, and ignores a CPU dry run."""
    import json

    speed = load("speed_gpu")
    out = tmp_path / "s.json"
    argv = ["--device", "cpu", "--pairs", "cspresnet10:resnet10", "--dtypes", "fp32,bf16", "--batch", "1", "2"]
    speed.main([*argv, "--img", "32", "--runs", "2", "--out", str(out)])
    g = json.loads(out.read_text())
    assert [(r["dtype"], r["batch"]) for r in g["rows"]] == [("fp32", 1), ("fp32", 2), ("bf16", 1), ("bf16", 2)]
    for r in g["rows"]:
        ips = r["images_per_s"]
        assert r["throughput_ratio"] == ips["cspresnet10"] / ips["resnet10"]
        assert ips["resnet10"] == r["batch"] / (r["median_ms"]["resnet10"] / 1e3)
    evidence = load("evidence")
    assert evidence.gpu_speed(None) == []
    g |= {"device": "cuda:0", "machine": {**g["machine"], "gpu": "H100", "cuda": "13.0"}}
    for r, ratio in zip(g["rows"], (1.2, 1.1, 1.3, 1.05), strict=True):
        r["throughput_ratio"] = ratio
    page = "\n".join(evidence.gpu_speed(g))
    assert "H100" in page and "1.05 to 1.30" in page and "Verdict on this GPU: supported" in page
    g["rows"][0]["throughput_ratio"] = 0.9
    assert "partly supported" in "\n".join(evidence.gpu_speed(g))


def test_readme_results_rows_quote_the_committed_json():
    """The README's accuracy rows say what the evidence JSON says; its grid row says "running" until the grid is done."""
    import json

    ev = REPO / "docs" / "results" / "evidence"
    readme = (REPO / "README.md").read_text()
    cls = json.loads((ev / "classify.json").read_text())
    for model in cls["pair"]:
        m = cls["models"][model]
        assert f"{m['mean']:.2f} ± {m['std']:.2f}" in readme, f"README: update {model}'s top-1"
    grid = json.loads((ev / "ablate.json").read_text())
    assert grid["complete"] or "grid at a plateau with 3 seeds (`benchmarks/evidence_ablate.py`) is running" in readme
    for name, t in grid["trends"].items() if grid["complete"] else ():
        ours = f"{t['ours']['delta']:+.2f} ± {t['ours']['se']:.2f}".replace("-", "−")
        assert f"{ours} points: {t['verdict'].split(' (')[0]}" in readme, f"README: update the grid's '{name}'"
    if grid["complete"]:
        gaps = [-r["diff_vs_plain"]["delta"] for k, r in grid["rows"].items() if k != "plain"]
        assert f"{min(gaps):.1f}-{max(gaps):.1f} points below resnet10" in readme, "README: update the grid's range"
    assert f"{abs(cls['diff']['delta']):.2f} ± {cls['diff']['se']:.2f} points lower" in readme
    rec = json.loads((ev / "detect_recipe.json").read_text())
    det = rec["settings"]["plateau-mosaic20-raccoon"]
    for model in rec["pair"]:
        assert f"{100 * det[model]['mean']:.1f} ± {100 * det[model]['std']:.1f}" in readme, f"README: update {model}"
    gap = f"{100 * det['gap']['delta']:+.1f} ± {100 * det['gap']['se']:.1f}".replace("-", "−").lstrip("+")
    assert f"gap of {gap} points" in readme, "README: update the detection gap"


def test_deployment_page_is_rendered_from_the_committed_json():
    import json

    dep = load("deployment")
    results = {n: json.loads((dep.PAGE.with_suffix("") / f"{n}.json").read_text()) for n in dep.RUNS}
    accuracy = json.loads((dep.PAGE.parent / "deployment_accuracy.json").read_text())
    stem = json.loads(dep.STEM.read_text()) if dep.STEM.is_file() else None
    assert dep.PAGE.read_text() == dep.page(results, accuracy, stem), (
        "run: python benchmarks/deployment.py --accuracy docs/results/deployment_accuracy.json"
    )


def test_grid_table_shows_each_seeds_plateau_criterion():
    """A grid run that stopped short of the plateau criterion reads 'fails' on its row and is left out of the count."""
    import json

    evidence = load("evidence")
    g = json.loads((REPO / "docs/results/evidence/ablate.json").read_text())
    g["rows"]["fusion=last"]["plateau_holds"] = [True, False]
    g["runs_finished"] = 2
    for label, r in g["rows"].items():
        if label not in ("plain", "fusion=both,gamma=0.5", "fusion=last"):
            r["plateau_holds"] = []
    text = "\n".join(evidence.claim_grid(g))
    assert "2 of 12 grid runs finished, 1 of them at the plateau criterion" in text
    row = next(line for line in text.splitlines() if line.startswith("| fusion=last |"))
    assert row.endswith("| holds, fails |")


def test_grid_reading_follows_the_committed_grid():
    """The grid's reading in words appears only once the grid is complete, and says 'not shown below' as soon as one
    CSP variant is within 2·SE of the plain twin."""
    import copy
    import json

    evidence = load("evidence")
    g = json.loads((REPO / "docs/results/evidence/ablate.json").read_text())
    if not g["complete"]:
        assert evidence.grid_reading(g) == []
        g["complete"] = True
    text = "\n".join(evidence.grid_reading(g))
    assert "Reading of the grid" in text
    close = copy.deepcopy(g)
    close["rows"]["gamma=0.75"]["diff_vs_plain"] = {"delta": -0.1, "se": 0.2, "detectable": 0.56}
    text = "\n".join(evidence.grid_reading(close))
    assert "not shown below resnet10" in text and "no fusion or γ setting" not in text
    assert evidence.grid_reading({**g, "complete": False}) == []
