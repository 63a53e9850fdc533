"""`cspnet ablate`: the smoke study writes its table and plots, MACs follow the design, an interrupted study resumes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import load_benchmark

from cspnet.ablate import build_grid, get_budget
from cspnet.bench.measure import count_macs
from cspnet.cli import main
from cspnet.engine import Trainer
from cspnet.models import create_model


@pytest.fixture
def data(tmp_path, make_folder) -> Path:
    return make_folder(tmp_path / "data", n=32, size=32)


def rows(study: Path) -> dict[str, dict]:
    return {r["variant"]: r for r in csv.DictReader((study / "results.csv").open())}


@pytest.mark.parametrize("base", ["peleenet", "resnet10"])
def test_mac_ordering_follows_the_design(base):
    """fusion last and both cost less than plain; MACs grow with gamma (the share of channels through the blocks)."""
    macs = {}
    for v in build_grid(base):
        macs[v.label] = count_macs(create_model(v.model, num_classes=10, **v.kwargs()), 32)
    plain = macs["plain"]
    assert macs["fusion=last"] < plain and macs["fusion=both,gamma=0.5"] < plain, macs
    assert macs["gamma=0.25"] < macs["fusion=both,gamma=0.5"] < macs["gamma=0.75"] < plain, macs


def test_grid_entries():
    grid = build_grid("peleenet", ["partial_ratio=0.25,fusion=last", "gamma=1.0", "model=csppeleenet"])
    assert [v.label for v in grid] == ["plain", "gamma=0.25,fusion=last", "model=csppeleenet"]  # gamma=1.0 is plain
    assert grid[1].model == "csppeleenet" and grid[1].kwargs() == {"partial_ratio": 0.25, "fusion": "last"}
    (plain,) = build_grid("cspresnet10", ["gamma=1.0"])  # a CSP base: its registered plain twin
    assert plain.model == "resnet10"


def test_a_budget_reaches_the_engine_whole():
    """Every recipe field of a Budget is a TrainCfg or ClassifyCfg setting (none is dropped on the way), and the
    configs built from it carry the budget's values, e.g. plateau_cpu's EMA decay and cooldown."""
    import dataclasses

    from cspnet.ablate.budgets import BUDGETS, RUNTIME, Budget
    from cspnet.engine import TrainCfg
    from cspnet.engine.tasks.classify import ClassifyCfg

    used = {f.name for f in dataclasses.fields(TrainCfg)} | {f.name for f in dataclasses.fields(ClassifyCfg)}
    measurement = {"threads", "latency_batches", "latency_runs", "latency_warmup", "train_batch"}
    assert {f.name for f in dataclasses.fields(Budget)} - used - measurement - {"name"} == set()
    assert set(RUNTIME) - measurement <= used
    b = BUDGETS["plateau_cpu"]
    t, c = b.train_cfg(seed=2, save_dir="runs/x"), b.classify_cfg("resnet10", "data.zip")
    assert (t.ema_decay, t.cooldown_epochs, t.epochs, t.lr, t.seed, t.save_dir) == (0.998, 10, 40, 0.2, 2, "runs/x")
    assert (c.model, c.data, c.img, c.scale, c.subset) == ("resnet10", "data.zip", 32, 0.35, None)
    s = get_budget("smoke", "resnet10", small_input=True, amp="bf16")
    assert s.classify_cfg("m", "d").small_input and s.train_cfg(0, "r").amp == "bf16"
    assert s.classify_cfg("m", "d").val_subset == 32 and s.train_cfg(0, "r").workers == 0


@pytest.mark.slow
def test_jobs_train_in_child_processes_and_record_the_command(data, tmp_path):
    """--jobs 2: two processes share the (variant, seed) units; study.json keeps the command that trained them and a
    changed recipe is refused before any process starts."""
    argv = ["ablate", "--base", "resnet10", "--data", str(data), "--budget", "smoke", "--grid", "fusion=last"]
    argv += ["--project", str(tmp_path), "--name", "par", "--jobs", "2", "--parts", "train,report"]
    assert main(argv) == 0
    study = tmp_path / "par"
    assert {r["variant"] for r in rows(study).values() if r["top1_mean"]} == {"plain", "fusion=last"}
    assert sorted(p.name for p in (study / "logs").iterdir()) == ["train_shard0.log", "train_shard1.log"]
    (command,) = json.loads((study / "study.json").read_text())["commands"]
    assert "--jobs 2" in command and "--parts train,report" in command
    sizes = [p.stat().st_size for p in sorted((study / "logs").iterdir())]
    assert main([*argv, "--epochs", "3"]) == 2  # another recipe: one error line, no process started
    assert [p.stat().st_size for p in sorted((study / "logs").iterdir())] == sizes


@pytest.mark.slow
def test_smoke_study_interrupted_then_finished_without_retraining(data, tmp_path, monkeypatch):
    """Ctrl-C in the second variant's second epoch; the re-run skips the first variant, resumes the second from its
    last.pt (one epoch left), trains the third (epochs counted per run folder), measures all and writes table + plots."""
    argv = ["ablate", "--base", "resnet10", "--data", str(data), "--budget", "smoke", "--epochs", "2"]
    argv += ["--grid", "fusion=last", "--grid", "gamma=0.25", "--project", str(tmp_path), "--name", "cut"]
    study = tmp_path / "cut"
    epochs: dict[str, int] = {}
    original = Trainer.train_epoch
    interrupt = True

    def counting(self):
        run = Path(self.cfg.save_dir).parent.name
        if interrupt and run == "fusion-last" and self.epoch == 1:
            raise KeyboardInterrupt
        epochs[run] = epochs.get(run, 0) + 1
        return original(self)

    monkeypatch.setattr(Trainer, "train_epoch", counting)
    assert main(argv) == 130
    assert epochs == {"plain": 2, "fusion-last": 1}
    done = study / "plain" / "seed0" / "train.json"
    mtime = done.stat().st_mtime_ns
    assert (study / "fusion-last" / "seed0" / "weights" / "last.pt").is_file()
    assert not (study / "fusion-last" / "seed0" / "train.json").exists()

    assert main([*argv, "--parts", "report"]) == 0  # a report from what exists: MACs counted, no accuracy yet
    assert rows(study)["fusion=last"]["top1_mean"] == "" and int(rows(study)["gamma=0.25"]["macs"]) > 0

    interrupt, epochs = False, {}
    assert main(argv) == 0
    assert epochs == {"fusion-last": 1, "gamma-0.25": 2}  # plain skipped, fusion=last resumed at epoch 2
    assert done.stat().st_mtime_ns == mtime
    resumed = json.loads((study / "fusion-last" / "seed0" / "train.json").read_text())
    assert resumed["resumed"] and resumed["epochs"] == 2 and len(resumed["curve"]) == 2

    table = rows(study)
    assert list(table) == ["plain", "fusion=last", "gamma=0.25"]
    for r in table.values():
        assert r["seeds"] == "1" and 0 <= float(r["top1_mean"]) <= 100
        for k in (
            "b1_fused_ms",
            "b8_fused_ms",
            "b1_unfused_ms",
            "b8_unfused_ms",
            "train_step_img_s",
            "activations_mib",
        ):
            assert float(r[k]) > 0, (r["variant"], k)
    assert int(table["fusion=last"]["macs"]) < int(table["plain"]["macs"])
    md = (study / "results.md").read_text()
    assert md.count("\n| ") == 4 and "cspnet ablate --base resnet10" in md
    for png in ("acc_vs_macs.png", "acc_vs_latency.png"):
        assert (study / png).read_bytes()[:4] == b"\x89PNG"
    # a report without --grid keeps the study's own variants (the default grid is not added)
    assert main(["ablate", "--base", "resnet10", "--project", str(tmp_path), "--name", "cut", "--parts", "report"]) == 0
    assert list(rows(study)) == ["plain", "fusion=last", "gamma=0.25"]


def test_changed_recipe_or_bad_grid_is_one_clear_error(data, tmp_path, capsys):
    argv = ["ablate", "--base", "resnet10", "--data", str(data), "--budget", "smoke", "--project", str(tmp_path)]
    assert main([*argv, "--grid", "fusion=sideways"]) == 2
    assert "grid entry 'fusion=sideways': unknown fusion" in capsys.readouterr().err
    assert main([*argv, "--grid", "partial_ratio"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    study = tmp_path / "resnet10_smoke"
    study.mkdir(parents=True)
    recipe = {**get_budget("smoke", "resnet10").recipe(), "epochs": 5}
    del recipe["cooldown_epochs"]  # a study from before the field existed: it reads as the default, not a change
    (study / "study.json").write_text(
        json.dumps({"base": "resnet10", "budget": "smoke", "recipe": recipe, "variants": {}, "commands": []})
    )
    assert main([*argv, "--parts", "train"]) == 2  # measure and report would adopt the saved recipe
    assert "another recipe (epochs 5 -> 1)" in capsys.readouterr().err


def test_a_users_registered_model_is_a_base():
    """A plain model with no twin: its CSP variants are the same config with partial_ratio and fusion overridden."""
    from cspnet.models import ModelCfg, StemCfg, register_model
    from cspnet.models.registry import _REGISTRY
    from cspnet.nn.stages import StageCfg

    @register_model()
    def my_tiny_net() -> ModelCfg:
        stages = tuple(StageCfg(1, w, 2, block="basic", partial_ratio=1.0) for w in (32, 64))
        return ModelCfg(StemCfg(out_chs=16, kernel_size=3, stride=1, pool=False), stages)

    try:
        grid = {v.label: v for v in build_grid("my_tiny_net")}
        assert grid["plain"].model == grid["fusion=last"].model == "my_tiny_net"
        assert grid["gamma=0.25"].kwargs() == {"partial_ratio": 0.25}  # fusion "both" is the StageCfg default
        macs = {k: count_macs(create_model(v.model, num_classes=10, **v.kwargs()), 32) for k, v in grid.items()}
        assert macs["fusion=last"] < macs["plain"] and macs["gamma=0.25"] < macs["gamma=0.75"], macs
    finally:
        _REGISTRY.pop("my_tiny_net", None)


def test_convergence_study_writes_curves_and_a_plateau_verdict(data, tmp_path):
    """benchmarks/convergence.py on the CPU budget: per-epoch curves of both models, the cooldown in the write-up."""
    conv = load_benchmark("convergence")
    out = tmp_path / "doc" / "convergence"
    argv = ["--budget", "converge_cpu", "--data", str(data), "--epochs", "4", "--seeds", "1", "--batch", "16"]
    argv += ["--workers", "0", "--parts", "train,report", "--project", str(tmp_path / "runs"), "--out", str(out)]
    assert conv.main([*argv, "--note", "See also the GPU run."]) == 0
    s = json.loads(out.with_suffix(".json").read_text())
    assert s["recipe"]["cooldown_epochs"] == 2 and s["recipe"]["small_input"] is False
    for name in ("cspresnet10", "resnet10"):
        assert [len(c) for c in s["models"][name]["curves"].values()] == [4], name
    md = out.with_suffix(".md").read_text()
    assert (
        "the last 2 epochs held at 1%" in md
        and "See also the GPU run." in md
        and "--budget converge_cpu --epochs 4" in md
    )
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_a_finished_run_continues_at_its_final_lr(data, tmp_path):
    """Budget.held_to: a finished run asked for more epochs resumes from its last.pt; the added epochs run at the
    final lr and the first ones are kept, not retrained (protocol amendment 1 of docs/results/protocol.md)."""
    from cspnet.ablate.study import Study, StudyCfg
    from cspnet.errors import ConfigError

    budget = get_budget("smoke", "resnet10", epochs=2, cooldown_epochs=1, workers=0)
    assert budget.held_to(4).cooldown_epochs == 3 and budget.held_to(4).recipe()["lr"] == budget.lr
    with pytest.raises(ConfigError, match="cannot shorten"):
        budget.held_to(1)
    study = Study(StudyCfg(base="resnet10", budget=budget, data=str(data), project=str(tmp_path), name="held"))
    study.open()
    v = study.variants[0]
    first = study.train_one(v, 0)
    assert first["epochs"] == 2 and not first["resumed"]
    assert study.train_one(v, 0) == first  # done: skipped
    more = study.train_one(v, 0, epochs=4)
    assert more["resumed"] and more["epochs"] == 4 and more["curve"][:2] == first["curve"]
    lrs = [float(r["lr"]) for r in csv.DictReader((study.run_dir(v, 0) / "results.csv").open())]
    assert len(lrs) == 4 and lrs[2] == pytest.approx(lrs[3]) == pytest.approx(budget.lr * 0.01)
    assert study.done["skipped"] == ["plain/seed0"] and study.done["resumed"] == ["plain/seed0"]


def test_evidence_lane_extends_runs_that_miss_the_plateau(data, tmp_path, monkeypatch):
    """benchmarks/evidence_classify.py: each run to the budget's length first, then +EXTEND epochs at a time while
    the plateau criterion misses, up to MAX_EPOCHS; the run JSON keeps the figure at the budget's length."""
    evc = load_benchmark("evidence_classify")
    monkeypatch.setattr(evc, "BUDGET", "smoke")
    monkeypatch.setattr(evc, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(evc, "EXTEND", 1)
    monkeypatch.setattr(evc, "MAX_EPOCHS", 3)
    from cspnet.engine.run import RunDir

    argv = ["lane", "--data", str(data), "--project", str(tmp_path / "runs"), "--workers", "0"]
    held = tmp_path / "runs" / "cspresnet10_vs_resnet10" / "plain" / "seed0"
    held.mkdir(parents=True)
    other_lane = RunDir(held, fresh=True)  # another lane trains resnet10: this one takes the next run and stops
    evc.main([*argv, "--units", "resnet10:0,cspresnet10:0"])
    assert not (tmp_path / "results" / "resnet10_seed0.json").exists()
    assert json.loads((tmp_path / "results" / "cspresnet10_seed0.json").read_text())["epochs"] == 3
    other_lane.release(keep=False)
    evc.main([*argv, "--units", "resnet10:0,cspresnet10:0"])
    for model in ("resnet10", "cspresnet10"):
        r = json.loads((tmp_path / "results" / f"{model}_seed0.json").read_text())
        assert r["epochs"] == 3 and len(r["curve_top1"]) == 3 and r["extended_by_amendment_1"], model
        assert r["top1_at_1"] == r["curve_top1"][0] and r["final_top1"] == r["curve_top1"][-1]
        assert r["plateau"] == {"holds": False, "move": None}  # 3 epochs are too few for two 5-epoch windows
    assert evc.next_epochs("resnet10", 0, 1) is None


def test_grid_lane_trains_variants_in_the_pair_study_under_its_recipe(data, tmp_path, monkeypatch):
    """benchmarks/evidence_ablate.py: grid runs live in the classification study's folder (one pinned recipe), write
    their variant and overrides, and the summary reads them beside the reference rows."""
    eva = load_benchmark("evidence_ablate")
    for name, value in (("BUDGET", "smoke"), ("RESULTS", tmp_path / "pair"), ("EXTEND", 1), ("MAX_EPOCHS", 1)):
        monkeypatch.setattr(eva.evc, name, value)
    monkeypatch.setattr(eva, "RESULTS", tmp_path / "grid")
    import argparse

    opened = argparse.Namespace(project=str(tmp_path / "runs"), workers=0, threads=1)
    eva.study(opened, str(data)).open()  # as `train` does before its lanes start
    argv = ["lane", "--data", str(data), "--project", str(tmp_path / "runs"), "--workers", "0"]
    eva.main([*argv, "--units", "gamma=0.25:0,fusion=last:0"])
    study = tmp_path / "runs" / "cspresnet10_vs_resnet10"
    assert {"gamma-0.25", "fusion-last", "model-cspresnet10", "plain"} <= set(
        json.loads((study / "study.json").read_text())["variants"]
    )
    r = json.loads((tmp_path / "grid" / "gamma-0.25_seed0.json").read_text())
    assert (r["model"], r["variant"], r["overrides"], r["epochs"]) == (
        "cspresnet10",
        "gamma=0.25",
        {"partial_ratio": 0.25},
        1,
    )
    assert (study / "gamma-0.25" / "seed0" / "results.csv").is_file()
    s = eva.summary()
    assert s["runs_finished"] == 2 and not s["complete"] and s["one_recipe"]
    assert s["rows"]["fusion=last"]["final_top1"] == [
        json.loads((tmp_path / "grid" / "fusion-last_seed0.json").read_text())["final_top1"]
    ]
    assert (
        s["rows"]["plain"]["seeds"] == []
        and s["rows"]["gamma=0.25"]["macs"] < s["rows"]["fusion=both,gamma=0.5"]["macs"]
    )
    assert all(t["verdict"] == "not shown yet (study running)" for t in s["trends"].values())
    assert eva.verdict({"delta": 1.0, "se": 0.4}, -1.5, True) == "refuted"
    assert eva.verdict({"delta": -1.0, "se": 0.4}, -1.5, True) == "supported"
    assert eva.verdict({"delta": -1.0, "se": 0.6}, -1.5, True).startswith("not shown")
