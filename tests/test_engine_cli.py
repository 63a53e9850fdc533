"""`cspnet classify train|val|predict` through the generic engine CLI: run folders, resume, options, bad input."""

from __future__ import annotations

import json

import pytest

from cspnet.cli import main
from cspnet.engine import load_checkpoint, save_checkpoint
from cspnet.engine.run_log import read_csv
from cspnet.errors import ConfigError


@pytest.fixture
def data(tmp_path, make_folder):
    return make_folder(tmp_path / "data", n=16, size=32)  # 32 images: 4 batches of 8


def rows(run) -> list[dict]:
    return read_csv(run / "results.csv")


def test_cli_train_val_predict_and_errors(data, tmp_path, capsys, make_folder):
    proj = str(tmp_path / "runs")
    base = ["classify", "train", "--data", str(data), "--img", "32", "--batch", "8", "--workers", "0"]
    assert main([*base, "--model", "resnet10", "--epochs", "1", "--project", proj, "--name", "r"]) == 0
    best = tmp_path / "runs/r/weights/best.pt"

    assert (
        main(
            [
                "classify",
                "val",
                "--weights",
                str(best),
                "--data",
                str(data),
                "--workers",
                "0",
                "--confusion",
                str(tmp_path / "cm.png"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "top-1" in out and "top-5" in out and "\na " in out and (tmp_path / "cm.png").is_file()

    img = next((data / "val" / "b").glob("*.jpg"))
    (tmp_path / "bad.jpg").write_bytes(b"x")
    argv = ["classify", "predict", "--weights", str(best), str(img), str(tmp_path / "bad.jpg"), "--topk", "2"]
    assert main([*argv, "--json", str(tmp_path / "new" / "p.json")]) == 0  # a missing folder is created
    res = json.loads((tmp_path / "new" / "p.json").read_text())
    assert len(res) == 1 and {t["class"] for t in res[0]["top"]} == {"a", "b"}
    assert "skipped 1 unreadable" in capsys.readouterr().out

    other = make_folder(tmp_path / "three", classes=("a", "b", "c"), size=32)
    assert main(["classify", "val", "--weights", str(best), "--data", str(other), "--workers", "0"]) == 2
    assert "reset_classifier" in capsys.readouterr().err
    # fine-tuning on 3 classes from the 2-class checkpoint: a warning and a fresh classifier
    tune = ["classify", "train", "--data", str(other), "--img", "32", "--batch", "4", "--workers", "0", "--epochs", "1"]
    with pytest.warns(UserWarning, match="reset_classifier"):
        assert main([*tune, "--model", "resnet10", "--weights", str(best), "--project", proj, "--name", "t"]) == 0
    assert load_checkpoint(tmp_path / "runs/t/weights/last.pt")["model"]["head.fc.weight"].shape[0] == 3
    # a checkpoint of another architecture as initial weights; resuming as another model; an existing run
    assert main([*base, "--model", "cspresnet10", "--weights", str(best), "--project", proj, "--name", "x"]) == 2
    assert "another architecture" in capsys.readouterr().err
    assert main([*base, "--model", "cspresnet10", "--project", proj, "--name", "r", "--resume"]) == 2
    assert "trained as resnet10" in capsys.readouterr().err
    assert main([*base, "--model", "resnet10", "--project", proj, "--name", "r"]) == 2
    assert "exists" in capsys.readouterr().err
    assert main([*base[:2], "--model", "resnet10", "--data", str(tmp_path / "none")]) == 2
    assert "not found" in capsys.readouterr().err


# ---- run folders, resume and bad input (issue 9) ------------------------------------------------------------------
def classify_argv(data, proj, *extra):
    base = ["classify", "train", "--model", "resnet10", "--data", str(data), "--img", "32", "--batch", "8"]
    return [*base, "--workers", "0", "--epochs", "1", "--project", str(proj), *extra]


def test_resume_writes_where_the_checkpoint_is_now_and_applies_only_safe_changes(data, tmp_path, capsys, make_folder):
    proj = tmp_path / "runs"
    assert main(classify_argv(data, proj, "--name", "x")) == 0
    (proj / "x").rename(proj / "x_old")  # the user moves the run away, then starts a new x
    assert main(classify_argv(data, proj, "--name", "x")) == 0
    new_args = (proj / "x" / "args.yaml").read_text()
    moved = data.rename(tmp_path / "moved")  # and moves the dataset

    capsys.readouterr()
    resume = ["--name", "x_old", "--resume", "--data", str(moved), "--epochs", "2"]
    assert main(classify_argv(moved, proj, *resume)) == 0
    out = capsys.readouterr().out
    assert f"resume: applying --data {moved} (was {data}), --epochs 2 (was 1)" in out
    assert [r["epoch"] for r in rows(proj / "x_old")] == ["1", "2"]
    assert load_checkpoint(proj / "x_old/weights/last.pt")["epoch"] == 2
    # the new x is untouched: one row, its own checkpoint and args
    assert [r["epoch"] for r in rows(proj / "x")] == ["1"] and load_checkpoint(proj / "x/weights/last.pt")["epoch"] == 1
    assert (proj / "x" / "args.yaml").read_text() == new_args

    last = str(proj / "x_old/weights/last.pt")
    assert main(classify_argv(moved, proj, "--resume", last, "--epochs", "3", "--img", "64", "--lr", "0.5")) == 2
    err = capsys.readouterr().err
    assert "--img 64 (run: 32), --lr 0.5 (run: 0.1) cannot change mid-run" in err and err.count("\n") == 1
    assert main(classify_argv(moved, proj, "--resume", last, "--epochs", "2")) == 2
    assert "finished its 2 epochs; pass --epochs above 2" in capsys.readouterr().err
    other = make_folder(tmp_path / "three", classes=("a", "b", "c"), size=32)  # --data is safe only with its classes
    assert main(classify_argv(other, proj, "--resume", last, "--epochs", "3")) == 2
    assert "does not fit this run: classes, num_classes differ" in capsys.readouterr().err
    assert [r["epoch"] for r in rows(proj / "x_old")] == ["1", "2"]


def test_run_folder_is_taken_atomically_and_locked(tmp_path):
    from cspnet.engine.run import claim_run, hold_run

    first = claim_run(tmp_path, "same")
    with pytest.raises(ConfigError, match="exists .*pass --exist-ok"):  # the second of two runs started at once
        claim_run(tmp_path, "same")
    with pytest.raises(ConfigError, match="in use by another training"):  # --exist-ok or --resume meanwhile
        claim_run(tmp_path, "same", exist_ok=True)
    with pytest.raises(ConfigError, match="in use by another training"):
        hold_run(tmp_path / "same")
    first.release()
    hold_run(tmp_path / "same").release()  # free again once the first run ends
    assert [claim_run(tmp_path, None).path.name for _ in range(3)] == ["exp", "exp2", "exp3"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        claim_run(tmp_path / "file", "r")


def test_a_failed_run_leaves_no_folder_and_the_name_is_free(data, tmp_path, capsys):
    proj = tmp_path / "runs"
    assert main(classify_argv(data, proj, "--name", "r", "--amp", "fp16", "--device", "cpu")) == 2  # fails in setup
    assert "fp16" in capsys.readouterr().err and not (proj / "r").exists()
    assert main(classify_argv(data, proj, "--name", "r", "--model", "nosuchmodel")) == 2
    assert not (proj / "r").exists()
    assert main(classify_argv(data, proj, "--name", "r", "--lr", "1e30")) == 2  # fails in epoch 1, after logging began
    assert "loss is" in capsys.readouterr().err and not (proj / "r").exists()
    (proj / "r").mkdir()  # a folder left by an older version: the error says it has no checkpoint
    assert main(classify_argv(data, proj, "--name", "r")) == 2
    assert "holds no checkpoint" in capsys.readouterr().err
    assert main(classify_argv(data, proj, "--name", "r", "--resume")) == 2
    assert "has no checkpoint to resume" in capsys.readouterr().err
    (tmp_path / "pfile").write_text("x")
    assert main(classify_argv(data, tmp_path / "pfile", "--name", "r")) == 2
    assert "is a file" in capsys.readouterr().err


def test_one_class_dataset_is_refused(tmp_path, make_folder, capsys):
    one = make_folder(tmp_path / "one", classes=("cat",), n=8, size=32)
    assert main(classify_argv(one, tmp_path / "runs", "--name", "r")) == 2
    assert "one class (cat)" in capsys.readouterr().err and not (tmp_path / "runs" / "r").exists()


def test_tampered_checkpoint_metadata_is_one_line(data, tmp_path, capsys):
    proj = tmp_path / "runs"
    assert main(classify_argv(data, proj, "--name", "r")) == 0
    ckpt = load_checkpoint(proj / "r/weights/best.pt")
    for change, msg in (
        ({"num_classes": 10**9}, "num_classes=1000000000"),
        ({"classes": ["a"]}, "lists 1 class names for a 2-class head"),
        ({"num_classes": 3, "classes": ["a", "b", "c"]}, "do not fit the model"),
    ):
        bad = tmp_path / "bad.pt"
        save_checkpoint({**ckpt, "meta": {**ckpt["meta"], **change}}, bad)
        capsys.readouterr()
        assert main(["classify", "val", "--weights", str(bad), "--data", str(data), "--workers", "0"]) == 2
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1, err


@pytest.mark.parametrize(
    "argv, msg",
    [
        (["classify", "train", "--img", "0"], "image size must be a positive"),
        (["classify", "train", "--epochs", "-1"], "must be a positive integer"),
        (["classify", "train", "--lr", "nan"], "expected a positive number"),
        (["classify", "val", "--weights", "w.pt", "--data", "d", "--batch", "0"], "must be a positive integer"),
        (["classify", "predict", "--weights", "w.pt", "x.jpg", "--topk", "-1"], "must be a positive integer"),
        (["classify", "predict", "--weights", "w.pt", "x.jpg", "--json", "{file}"], "exists; pass --force"),
    ],
)
def test_numeric_and_output_arguments_are_refused_before_any_work(argv, msg, tmp_path, capsys):
    (tmp_path / "out.json").write_text("kept")
    argv = [a.replace("{file}", str(tmp_path / "out.json")) for a in argv]
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and msg in err and err.count("\n") == 1, err
    assert (tmp_path / "out.json").read_text() == "kept"


def test_nested_task_settings_are_flat_options(tmp_path, capsys):
    """DetectCfg holds an AugCfg and a LossCfg: `--mosaic` and `--iou-thresh` land in them, args.yaml and the
    checkpoint's args list them flat, and --resume compares them by those names."""
    from cspnet.cli import build_parser
    from cspnet.engine.cli import build_trainer

    argv = ["detect", "train", "--model", "yolov4-tiny", "--data", "d.yaml", "--mosaic", "0.3", "--scale", "0.2"]
    argv += ["--iou-thresh", "0.4", "--label-smoothing", "0.1", "--project", str(tmp_path), "--name", "r"]
    trainer, _ = build_trainer(build_parser().parse_args(argv))
    trainer.run.release(keep=False)
    c = trainer.task.cfg
    assert (c.aug.mosaic, c.aug.scale, c.aug.fliplr) == (0.3, 0.2, 0.5)  # given, given, default
    assert (c.loss.iou_thresh, c.loss.label_smoothing, c.loss.box) == (0.4, 0.1, 0.05)
    assert trainer.args["mosaic"] == 0.3 and trainer.args["iou_thresh"] == 0.4 and "aug" not in trainer.args
    assert trainer.args["lr"] == 0.01 and trainer.cfg.save_dir == str(tmp_path / "r")  # the task's train defaults

    last = tmp_path / "old" / "weights" / "last.pt"
    save_checkpoint({"task": "detect", "args": {**trainer.args, "epochs": 5}, "model": {}, "epoch": 1}, last)
    assert main(["detect", "train", "--resume", str(last), "--mosaic", "0.5"]) == 2
    assert "--mosaic 0.5 (run: 0.3) cannot change mid-run" in capsys.readouterr().err
