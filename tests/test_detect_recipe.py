"""benchmarks/detect_recipe.py: each recipe knob changes what it says; a lane writes a unit's JSON once, and a
plateau-stage run stops at the epoch that meets the criterion."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import load_benchmark
from torch import nn

from cspnet.data.sample import make_sample
from cspnet.engine.checkpoint import load_checkpoint
from cspnet.engine.tasks.detect import DetectCfg


@pytest.fixture(scope="module")
def drc():
    return load_benchmark("detect_recipe")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_sample(tmp_path_factory.mktemp("sample")) / "detect" / "data.yaml"


@pytest.fixture
def tiny(drc, data, monkeypatch, tmp_path):
    """The study shrunk to seconds: img 64, 4 images, batch 2, 1 epoch; results under tmp_path."""
    monkeypatch.setattr(drc, "RESULTS", tmp_path / "results" / "detect_recipe")
    monkeypatch.setattr(drc, "DATASETS", {"raccoon": str(data), "coco128": str(data)})
    monkeypatch.setitem(drc.BASE_DETECT, "img", 64)
    monkeypatch.setitem(drc.BASE_DETECT, "subset", 4)
    monkeypatch.setitem(drc.BASE_DETECT, "auto_anchors", False)  # 4 images hold 8 boxes: too few for 9 k-means anchors
    monkeypatch.setitem(drc.BASE_TRAIN, "epochs", 1)
    monkeypatch.setitem(drc.BASE_TRAIN, "batch", 2)
    return ["--data-root", str(tmp_path), "--project", str(tmp_path / "runs"), "--workers", "0", "--threads", "1"]


def build(drc, data, **knobs) -> nn.Module:
    torch.manual_seed(0)
    cfg = DetectCfg(model="yolov4-s", data=str(data), img=64, width=0.125, subset=4, val_subset=4)
    return drc.RecipeTask(cfg, **knobs).build_model()


def test_knobs_change_what_they_say(drc, data):
    base = build(drc, data)
    bns = dict(base.named_modules())
    zeroed = [n for n, m in bns.items() if isinstance(m, nn.BatchNorm2d) and not m.weight.any()]
    assert zeroed and all(".conv2.bn" in n for n in zeroed)  # the library's zero-γ: the last BN of dark blocks
    off = dict(build(drc, data, zero_gamma=False).named_modules())
    assert all(bool((off[n].weight == 1).all()) for n in zeroed)

    bn_all = lambda m: [x for x in m.modules() if isinstance(x, nn.modules.batchnorm._BatchNorm)]  # noqa: E731
    assert {x.momentum for x in bn_all(base)} == {0.1}
    assert {x.momentum for x in bn_all(build(drc, data, bn_momentum=0.03))} == {0.03}

    for decay_bn in (False, True):
        task = drc.RecipeTask(DetectCfg(model="yolov4-s", data=str(data)), bn_decay=decay_bn)
        decayed = {id(p) for g in task.param_groups(base, 0.01) if g["weight_decay"] > 0 for p in g["params"]}
        bn_params = {id(p) for x in bn_all(base) for p in x.parameters()}
        assert (bn_params <= decayed) if decay_bn else not (bn_params & decayed)
        assert all(id(p) in decayed for p in base.parameters() if p.ndim > 1)  # conv weights: always decayed
        assert sum(len(g["params"]) for g in task.param_groups(base, 0.01)) == len(list(base.parameters()))


def test_lane_writes_a_unit_once_and_reports(drc, tiny, monkeypatch):
    drc.main(["lane", *tiny, "--units", "bnmom0.03:yolov4-s:0"])
    r = json.loads(drc.unit_path("bnmom0.03", "yolov4-s", 0).read_text())
    assert r["epochs"] == 1 and len(r["curve_map50"]) == 1 and r["final_map50"] == r["curve_map50"][-1]
    assert r["recipe"]["task"] == {"bn_momentum": 0.03} and r["recipe"]["train"]["lr"] == 0.003
    assert r["epochs_last_sitting"] == 1 and r["wall_s_last_sitting"] >= 0 and r["machine"]["threads"] == 1

    def trains(*a):
        raise AssertionError("a unit whose JSON exists was trained again")

    monkeypatch.setattr(drc, "run_unit", trains)
    drc.main(["lane", *tiny, "--units", "bnmom0.03:yolov4-s:0"])
    drc.main(["report"])
    s = json.loads(drc.RESULTS.with_suffix(".json").read_text())
    assert s["settings"]["bnmom0.03"]["yolov4-s"]["n"] == 1
    assert "| bnmom0.03 | 1 |" in drc.RESULTS.with_suffix(".md").read_text()


def test_plateau_run_stops_at_the_criterion(drc, tiny, monkeypatch):
    """Cosine over 1 epoch, then windows of 1: the criterion (any move passes) holds after epoch 3 of at most 4;
    last.pt keeps epoch 3, and the unit JSON says it plateaued."""
    monkeypatch.setattr(drc, "COSINE", 1)
    monkeypatch.setattr(drc, "CAP", 4)
    monkeypatch.setattr(drc, "WINDOW", 1)
    monkeypatch.setattr(drc, "PLATEAU_POINTS", 1e9)
    drc.main(["lane", *tiny, "--recipe", "warmup6", "--units", "plateau-raccoon:yolov4-s:0"])
    r = json.loads(drc.unit_path("plateau-raccoon", "yolov4-s", 0).read_text())
    assert r["epochs"] == 3 and r["plateau"]["holds"] and r["recipe"]["train"]["warmup_epochs"] == 6.0
    assert r["recipe"]["train"]["cooldown_epochs"] == 3 and r["recipe"]["detect"]["close_mosaic"] == 3
    ckpt = load_checkpoint(Path(tiny[3]) / "plateau-raccoon" / "yolov4-s" / "seed0" / "weights" / "last.pt")
    assert ckpt["epoch"] == 3


def test_screen_starts_lanes_over_the_units_left(drc, tiny, monkeypatch):
    """`screen --jobs 2` starts two lanes, each given every unit without a JSON, seed-major; their command line parses."""
    started = []

    class Lane:
        def __init__(self, argv, env):
            started.append(argv)

        def wait(self):
            return 0

    monkeypatch.setattr(drc.subprocess, "Popen", Lane)
    monkeypatch.setattr(drc.time, "sleep", lambda s: None)
    done = drc.unit_path("base", "yolov4-s", 0)
    done.parent.mkdir(parents=True)
    done.write_text(
        json.dumps({"recipe": dict(zip(("detect", "train", "task"), drc.recipe("base", ""), strict=False))})
    )
    with pytest.raises(SystemExit) as e:
        drc.main(["screen", *tiny, "--jobs", "2"])
    assert e.value.code == 0 and len(started) == 2 and started[0] == started[1]
    units = started[0][started[0].index("--units") + 1].split(",")
    assert len(units) == len(drc.SETTINGS) * 2 * drc.SEEDS - 1 and "base:yolov4-s:0" not in units
    assert units[: 2 * len(drc.SETTINGS) - 1][-1].endswith(":0") and units[-1].endswith(":2")
    lanes = []
    monkeypatch.setattr(drc, "lane", lambda args: lanes.append(args))
    drc.main(started[0][2:])
    assert lanes[0].units == ",".join(units) and lanes[0].workers == 0


def test_amendment_2_stage_names_its_mosaic_epoch(drc):
    """Detection amendment 2: a second plateau stage whose mosaic closes at epoch N, under its own name, while the
    first stage's units keep theirs (and their recipe)."""
    assert drc.units("plateau", 20, ["raccoon"])[0] == ("plateau-mosaic20-raccoon", "yolov4-s", 0)
    assert drc.plateau_name("raccoon", drc.COSINE) == "plateau-raccoon"
    first, second = drc.recipe("plateau-raccoon", ""), drc.recipe("plateau-mosaic20-raccoon", "")
    assert first[0]["close_mosaic"] == drc.CAP - drc.COSINE and second[0]["close_mosaic"] == drc.CAP - 20
    assert first[1] == second[1] and second[3] == "raccoon"
    assert drc.command("plateau-mosaic20-raccoon", "").endswith("--mosaic-epochs 20 --datasets raccoon")
    for bad in (
        ["screen", "--mosaic-epochs", "20"],
        ["plateau", "--datasets", "voc"],
        ["plateau", "--mosaic-epochs", "70"],
    ):
        with pytest.raises(SystemExit):
            drc.main(bad)
