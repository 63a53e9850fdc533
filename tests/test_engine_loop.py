"""The Trainer on tiny generated data: schedule, AMP/EMA/accumulation, the run folder, checkpoints, NaN guard, Ctrl-C."""

from __future__ import annotations

import math

import pytest
import torch

from cspnet.engine import NonFiniteLossError, TrainCfg, Trainer, load_checkpoint, save_checkpoint
from cspnet.engine.optim import lr_factor
from cspnet.engine.run_log import read_csv
from cspnet.engine.task import default_param_groups
from cspnet.engine.tasks.classify import ClassifyCfg, ClassifyTask
from cspnet.errors import ConfigError, InputError
from cspnet.models import create_model


@pytest.fixture
def data(tmp_path, make_folder):
    return make_folder(tmp_path / "data", n=16, size=32)  # 32 images: 4 batches of 8


def trainer(data, save_dir, task_cls=ClassifyTask, task_kw=None, **kw) -> Trainer:
    task = task_cls(ClassifyCfg(model="resnet10", data=str(data), img=32, **(task_kw or {})))
    cfg = dict(epochs=2, batch=8, lr=0.05, workers=0, save_dir=str(save_dir), seed=0)
    return Trainer(task, TrainCfg(**{**cfg, **kw}))


def rows(run) -> list[dict]:
    return read_csv(run / "results.csv")


def test_lr_schedule_and_no_decay_on_norm_and_bias():
    f = [lr_factor(s, 10, 100, 0.01) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:])) and f[-1] == pytest.approx(0.01, abs=1e-3)
    groups = default_param_groups(create_model("resnet10", num_classes=2), 1e-4)
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


def test_write_json_is_atomic(tmp_path):
    """A result JSON that cannot be serialised leaves the last good one whole, and no temp file behind."""
    import json

    from cspnet.io import write_json

    path = write_json(tmp_path / "r.json", {"top1": 80.1})
    assert path.read_text().endswith("}\n") and json.loads(path.read_text()) == {"top1": 80.1}
    with pytest.raises(TypeError):
        write_json(path, {"top1": object()})
    assert json.loads(path.read_text()) == {"top1": 80.1} and [p.name for p in tmp_path.iterdir()] == ["r.json"]


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


def test_unreadable_images_are_counted_and_all_bad_stops(tmp_path, make_folder):
    data = make_folder(tmp_path / "d", n=6, size=32, bad=4)  # 16 files: two full batches
    run = tmp_path / "run"
    trainer(data, run, epochs=1).fit()
    assert int(rows(run)[0]["skipped"]) == 4
    for f in (tmp_path / "d" / "val").rglob("*.jpg"):
        f.write_bytes(b"broken")
    with pytest.raises(InputError, match="every image of the validation split .* failed to load"):
        trainer(data, tmp_path / "run2", epochs=1).fit()
    assert not (tmp_path / "run2").exists()  # checked before training: no epoch was spent


def test_bad_settings_are_config_errors(data, tmp_path):
    with pytest.raises(ConfigError, match="SyncBatchNorm"):
        trainer(data, tmp_path, sync_bn=True, device="cpu").fit()
    with pytest.raises(ConfigError, match="fp16"):
        trainer(data, tmp_path, amp="fp16", device="cpu").fit()
    with pytest.raises(ConfigError, match="larger than"):
        trainer(data, tmp_path, batch=64).fit()
    with pytest.raises(ConfigError, match="cooldown_epochs 2 must be .* below epochs 2"):
        trainer(data, tmp_path, cooldown_epochs=2).fit()


def test_cooldown_epochs_hold_the_final_lr(data, tmp_path):
    t = trainer(data, tmp_path / "run", epochs=3, cooldown_epochs=1, min_lr=0.1, warmup_epochs=0)
    t.fit()
    lrs = [float(r["lr"]) for r in rows(tmp_path / "run")]
    assert lrs[0] > lrs[1] > lrs[2] == pytest.approx(0.05 * 0.1)  # the cosine ends after epoch 2, then holds


class NanAfter(ClassifyTask):
    """Returns a NaN loss from the 6th training batch on (in epoch 2 with 4 batches an epoch)."""

    calls = 0

    def loss(self, preds, batch):
        loss, items = super().loss(preds, batch)
        if torch.is_grad_enabled():
            NanAfter.calls += 1
            if NanAfter.calls >= 6:
                loss = loss * float("nan")
        return loss, items


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


def test_amp_modes_are_one_list(tmp_path):
    from cspnet.cli import build_parser
    from cspnet.engine.amp import AMP_MODES, amp_dtype

    cpu = torch.device("cpu")
    assert [amp_dtype(m, cpu) for m in ("auto", "off", "bf16")] == [None, None, torch.bfloat16]
    assert amp_dtype("auto", torch.device("cuda")) == amp_dtype("fp16", torch.device("cuda")) == torch.float16
    with pytest.raises(ConfigError, match="unknown amp mode 'fp8'; use auto, off, bf16 or fp16"):
        amp_dtype("fp8", cpu)
    parser = build_parser()
    for argv in (["classify", "train"], ["detect", "val", "--weights", "w", "--data", "d"], ["ablate", "--base", "b"]):
        for mode in AMP_MODES:  # every command takes the same modes
            assert parser.parse_args([*argv, "--amp", mode]).amp == mode


def test_run_log_cuts_results_back_to_the_checkpoint_on_resume(tmp_path, capsys):
    from cspnet.engine.run_log import RunLog

    log = RunLog(tmp_path, {"lr": 0.1}, epochs=3, shown=("val/loss",))
    log.start(resumed=False)
    for e in (1, 2, 3):
        log({"epoch": e, "val/loss": 1.0 / e})
    log.close()
    assert "epoch 2/3 val/loss=0.5" in capsys.readouterr().out
    assert {"loss.png", "args.yaml"} <= {p.name for p in tmp_path.iterdir()}
    log = RunLog(tmp_path, {"lr": 0.1}, epochs=3, shown=())
    log.start(resumed=True, start_epoch=1)  # the checkpoint had 1 epoch: rows 2 and 3 were written after it
    assert [r["epoch"] for r in rows(tmp_path)] == ["1"]
    log.close()
    RunLog(tmp_path, {}, epochs=3, shown=()).start(resumed=False)  # a new run starts a new table
    assert not (tmp_path / "results.csv").exists()


def test_train_cfg_default_folder_is_generic():
    assert TrainCfg().save_dir == "runs/train/exp"


def test_flat_settings_refuse_a_name_used_twice():
    import dataclasses

    from cspnet.engine.config import flat_values, from_flat

    @dataclasses.dataclass
    class Inner:
        scale: float = 0.5

    @dataclasses.dataclass
    class Outer:
        scale: float = 1.0
        inner: Inner = dataclasses.field(default_factory=Inner)

    with pytest.raises(TypeError, match="scale named twice"):
        flat_values(Outer())

    @dataclasses.dataclass
    class Ok:
        img: int = 32
        inner: Inner = dataclasses.field(default_factory=Inner)

    assert flat_values(Ok()) == {"img": 32, "scale": 0.5}
    assert from_flat(Ok, {"scale": 0.25, "lr": 1}) == Ok(inner=Inner(0.25))  # names of other settings are ignored
