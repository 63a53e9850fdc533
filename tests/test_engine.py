"""The Trainer on tiny generated data: run folder, AMP/EMA/accumulation, checkpoints, NaN guard, Ctrl-C, errors."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from test_data import make_folder

from cspnet.cli import main
from cspnet.engine import NonFiniteLossError, TrainCfg, Trainer, load_checkpoint, save_checkpoint
from cspnet.engine.tasks.classify import ClassifyCfg, ClassifyTask
from cspnet.engine.trainer import lr_factor, param_groups
from cspnet.errors import ConfigError, InputError
from cspnet.models import create_model


@pytest.fixture
def data(tmp_path):
    return make_folder(tmp_path / "data", n=16, size=32)  # 32 images: 4 batches of 8


def trainer(data, save_dir, task_cls=ClassifyTask, task_kw=None, **kw) -> Trainer:
    task = task_cls(ClassifyCfg(model="resnet10", data=str(data), img=32, **(task_kw or {})))
    cfg = dict(epochs=2, batch=8, lr=0.05, workers=0, save_dir=str(save_dir), seed=0)
    return Trainer(task, TrainCfg(**{**cfg, **kw}))


def rows(run) -> list[dict]:
    return list(csv.DictReader((run / "results.csv").open()))


def test_lr_schedule_and_no_decay_on_norm_and_bias():
    f = [lr_factor(s, 10, 100, 0.01) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:])) and f[-1] == pytest.approx(0.01, abs=1e-3)
    groups = param_groups(create_model("resnet10", num_classes=2), 1e-4)
    assert all(p.ndim > 1 for p in groups[0]["params"]) and groups[0]["weight_decay"] == 1e-4
    assert all(p.ndim <= 1 for p in groups[1]["params"]) and groups[1]["weight_decay"] == 0.0


def test_checkpoint_is_atomic(tmp_path, monkeypatch):
    path = save_checkpoint({"model": {"w": torch.ones(2)}, "epoch": 1}, tmp_path / "last.pt")

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # killed mid-write

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"model": {"w": torch.zeros(2)}, "epoch": 2}, path)
    assert load_checkpoint(path)["epoch"] == 1  # the old file is whole


def test_fit_writes_the_run_folder(data, tmp_path):
    run = tmp_path / "run"
    aug = dict(mixup=0.2, cutmix=1.0, label_smoothing=0.1, randaugment=True)
    t = trainer(data, run, task_kw=aug, amp="bf16", accumulate=2, channels_last=True, optimizer="adamw", lr=1e-3)
    m = t.fit()
    for f in ("args.yaml", "results.csv", "weights/last.pt", "weights/best.pt", "loss.png", "metrics.png", "lr.png"):
        assert (run / f).is_file(), f
    assert list(run.glob("events.out.tfevents.*"))
    r = rows(run)
    assert [int(x["epoch"]) for x in r] == [1, 2]
    assert all(math.isfinite(float(x["train/loss"])) for x in r) and m["val/top1"] >= 0
    ckpt = torch.load(run / "weights/last.pt", weights_only=True)  # plain tensors and primitives only
    assert ckpt["epoch"] == 2 and ckpt["meta"]["classes"] == ["a", "b"] and ckpt["model_ema"] is not None
    assert ckpt["ema_updates"] == 2 * 2  # 4 batches / accumulate 2, two epochs
    assert "optimizer" not in torch.load(run / "weights/best.pt", weights_only=True)


def test_unreadable_images_are_counted_and_all_bad_stops(tmp_path):
    data = make_folder(tmp_path / "d", n=6, size=32, bad=4)  # 16 files: two full batches
    run = tmp_path / "run"
    trainer(data, run, epochs=1).fit()
    assert int(rows(run)[0]["skipped"]) == 4
    for f in (tmp_path / "d" / "val").rglob("*.jpg"):
        f.write_bytes(b"broken")
    with pytest.raises(InputError, match="every image failed"):
        trainer(data, tmp_path / "run2", epochs=1).fit()


def test_bad_settings_are_config_errors(data, tmp_path):
    with pytest.raises(ConfigError, match="SyncBatchNorm"):
        trainer(data, tmp_path, sync_bn=True, device="cpu").fit()
    with pytest.raises(ConfigError, match="fp16"):
        trainer(data, tmp_path, amp="fp16", device="cpu").fit()
    with pytest.raises(ConfigError, match="larger than"):
        trainer(data, tmp_path, batch=64).fit()


class NanAfter(ClassifyTask):
    """Returns a NaN loss from the 6th training batch on (in epoch 2 with 4 batches an epoch)."""

    calls = 0

    def forward(self, model, batch, train):
        loss, stats = super().forward(model, batch, train)
        if train:
            NanAfter.calls += 1
            if NanAfter.calls >= 6:
                loss = loss * float("nan")
        return loss, stats


def test_nan_loss_stops_and_last_keeps_the_good_state(data, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match="last.pt keeps epoch 1"):
        trainer(data, run, task_cls=NanAfter, epochs=3).fit()
    ckpt = load_checkpoint(run / "weights/last.pt")
    assert ckpt["epoch"] == 1 and all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


class InterruptAt(ClassifyTask):
    """Ctrl-C at the 6th training batch (the 2nd of epoch 2)."""

    calls = 0

    def forward(self, model, batch, train):
        if train:
            InterruptAt.calls += 1
            if InterruptAt.calls == 6:
                raise KeyboardInterrupt
        return super().forward(model, batch, train)


def test_ctrl_c_saves_last_and_resume_finishes(data, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        trainer(data, run, task_cls=InterruptAt, epochs=3).fit()
    ckpt = load_checkpoint(run / "weights/last.pt")
    assert (ckpt["epoch"], ckpt["batch"]) == (1, 1)  # one epoch done, one batch of the next
    t = trainer(data, run, epochs=3)
    t.fit(resume=run / "weights/last.pt")
    assert [int(x["epoch"]) for x in rows(run)] == [1, 2, 3]
    assert load_checkpoint(run / "weights/last.pt")["epoch"] == 3


def test_cli_train_val_predict_and_errors(data, tmp_path, capsys):
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
    assert main([*argv, "--json", str(tmp_path / "p.json")]) == 0
    res = json.loads((tmp_path / "p.json").read_text())
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
