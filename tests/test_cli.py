"""The `cspnet` command: the zoo table, compare (table and JSON), and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cspnet.cli import main


def test_models_table(capsys):
    assert main(["models", "csp*"]) == 0
    out = capsys.readouterr().out
    assert "cspresnet50" in out and "resnet50 " in out  # the twin column
    assert "darknet53" in out and "\nresnet10 " not in out  # filtered to csp*


def test_models_json_measures(capsys):
    assert main(["models", "resnet10", "--measure", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["name"] == "resnet10" and row["twin"] == "cspresnet10"
    assert abs(row["params_m"] - 5.419) < 1e-3


@pytest.mark.slow
def test_compare_json_is_consistent(capsys):
    assert main(["compare", "resnet10", "cspresnet10", "--img", "64", "--runs", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    a, b = result["models"]["resnet10"], result["models"]["cspresnet10"]
    assert a["ratio_vs_first"] == 1.0
    assert abs(b["ratio_vs_first"] - b["median_ms"] / a["median_ms"]) < 1e-9
    assert b["params"] < a["params"] and b["macs"] < a["macs"]
    assert a["p25_ms"] <= a["median_ms"] <= a["p75_ms"]


@pytest.mark.slow
def test_compare_table(capsys):
    assert main(["compare", "resnet10", "cspresnet10", "--img", "64", "--runs", "2"]) == 0
    out = capsys.readouterr().out
    assert "cspresnet10 / resnet10: params x0.64, MACs x0.60, median latency x" in out


@pytest.mark.slow
def test_unknown_model_is_one_line_with_suggestion():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "cspnet.cli", "compare", "resnet50", "cspresnet5"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("cspnet: error: unknown model 'cspresnet5'; did you mean cspresnet50")


@pytest.mark.slow
def test_compare_fused_keeps_the_counts(capsys):
    assert main(["compare", "resnet10", "cspresnet10", "--img", "64", "--runs", "2", "--fuse", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["fused"] is True
    assert result["models"]["cspresnet10"]["macs"] < result["models"]["resnet10"]["macs"] > 0


def test_a_task_module_is_imported_only_when_its_command_is_parsed(monkeypatch):
    from cspnet.cli import build_parser
    from cspnet.engine import task_registry as registry

    entry = registry.TaskModule("cspnet_no_such_task_module", "a task that is never imported")
    monkeypatch.setitem(registry.TASK_MODULES, "ghost", entry)
    parser = build_parser()  # lists the task without importing its module
    assert "a task that is never imported" in parser.format_help()
    assert parser.parse_args(["models"]).command == "models"
    with pytest.raises(ModuleNotFoundError, match="cspnet_no_such_task_module"):
        parser.parse_args(["ghost", "train"])


def test_a_lazily_loaded_task_parses_as_before(monkeypatch, capsys):
    from cspnet.cli import build_parser
    from cspnet.engine import task_registry as registry
    from cspnet.engine.cli import cmd_train

    module = registry.TASK_MODULES["classify"].module
    monkeypatch.delitem(registry.TASKS, "classify", raising=False)  # as in a fresh `cspnet` process
    monkeypatch.delitem(sys.modules, module, raising=False)
    parser = build_parser()
    assert "classify" not in registry.TASKS
    args = parser.parse_args(["classify", "train", "--model", "resnet10", "--data", "d", "--epochs", "2"])
    assert args.func is cmd_train and args.task_spec is registry.TASKS["classify"] and args.epochs == 2
    assert args.task_spec.help == registry.TASK_MODULES["classify"].help  # one help line, from TASK_MODULES
    monkeypatch.delitem(registry.TASKS, "classify")
    monkeypatch.delitem(sys.modules, module)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["classify", "train", "--help"])  # help fills the parser too
    assert "--small-input" in capsys.readouterr().out
