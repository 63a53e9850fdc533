"""The Trainer on tiny generated data: run folder, AMP/EMA/accumulation, checkpoints, NaN guard, Ctrl-C, errors."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from cspnet.cli import main
from cspnet.engine import (
    GatherMetric,
    NonFiniteLossError,
    SumMetric,
    TaskBase,
    TrainCfg,
    Trainer,
    evaluate,
    load_checkpoint,
    save_checkpoint,
)
from cspnet.engine.checkpoint import load_model
from cspnet.engine.cli import add_eval_args, add_task_parser
from cspnet.engine.optim import lr_factor
from cspnet.engine.task import default_param_groups
from cspnet.engine.task_registry import TaskSpec, register_task
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
    return list(csv.DictReader((run / "results.csv").open()))


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


# ---- a second task plugs in without touching the trainer: per-image regression of the mean pixel value ----------
@dataclasses.dataclass
class MeanCfg:
    n: int = 32  # images per split
    img: int = 8
    width: int = 8


class NoiseImages(torch.utils.data.Dataset):
    """Random images of random brightness; the target is their mean pixel value."""

    def __init__(self, n: int, img: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.rand(n, 3, img, img, generator=g) * torch.rand(n, 1, 1, 1, generator=g)
        self.where = f"noise(seed={seed})"

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], self.x[i].mean()


class R2(GatherMetric):
    """Keeps every (prediction, target) pair and evaluates once: R^2 and MAE (a stand-in for COCOeval)."""

    def records(self, preds, batch):
        return list(zip(preds.tolist(), batch["targets"].tolist()))

    def evaluate(self, records):
        p, t = torch.tensor(records, dtype=torch.float64).T
        return {"mae": float((p - t).abs().mean()), "r2": float(1 - ((p - t) ** 2).sum() / ((t - t.mean()) ** 2).sum())}


class MeanTask(TaskBase):
    name = "meanpix"
    fitness = "val/r2"
    calls: dict = {}  # hook -> arguments seen (class-level: the CLI builds the task)

    def datasets(self):
        return NoiseImages(self.cfg.n, self.cfg.img, 0), NoiseImages(self.cfg.n // 2, self.cfg.img, 1)

    def collate(self, train):
        def collate(items):
            x, y = zip(*items)
            return {"images": torch.stack(x), "targets": torch.stack(y), "skipped": 0}

        return collate

    def meta(self):
        return {"width": self.cfg.width, "img": self.cfg.img}

    @staticmethod
    def model_from_meta(meta):
        w = meta["width"]
        return torch.nn.Sequential(
            torch.nn.Conv2d(3, w, 3, padding=1),
            torch.nn.BatchNorm2d(w),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
            torch.nn.Linear(w, 1),
        )

    def build_model(self):
        return self.model_from_meta(self.meta())

    def forward(self, model, batch, train):
        return model(batch["images"]).squeeze(1).float()

    def loss(self, preds, batch):
        mse = torch.nn.functional.mse_loss(preds, batch["targets"])
        return mse, {"mse": mse.detach()}

    def metric(self, train):
        return None if train else R2()

    def param_groups(self, model, weight_decay):  # the head learns 3x faster than the rest
        head = list(model[-1].parameters())
        rest = [p for p in model.parameters() if all(p is not h for h in head)]
        MeanTask.calls.setdefault("param_groups", []).append(len(head))
        return [{"params": rest}, {"params": head, "lr": 3 * 0.01}]

    def preprocess(self, batch, train):  # multi-scale: a random size per training batch, on the device
        if train:
            size = int(torch.randint(6, 11, ()))
            batch["images"] = torch.nn.functional.interpolate(batch["images"], size=size, mode="bilinear")
            MeanTask.calls.setdefault("sizes", set()).add(size)
        return batch

    def on_epoch_start(self, trainer, epoch):
        MeanTask.calls.setdefault("epochs", []).append(epoch)


def mean_val(args) -> int:
    """val for the toy task: the generic pieces, load_model and evaluate, without a Trainer."""
    model, meta, _ = load_model(args.weights, "meanpix")
    task = MeanTask(MeanCfg(img=meta["img"], width=meta["width"]))
    loader = torch.utils.data.DataLoader(task.datasets()[1], 5, collate_fn=task.collate(False))
    print(json.dumps(evaluate(model, loader, task, device=args.device, progress=False)))
    return 0


def mean_args(p):
    p.add_argument("--n", type=int)
    p.add_argument("--width", type=int)


MEAN = TaskSpec(
    "meanpix", MeanTask, MeanCfg, add_train_args=mean_args, required=(), add_val_args=add_eval_args, val=mean_val
)


def test_toy_regression_task_trains_resumes_and_validates_through_the_generic_cli(tmp_path, capsys):
    register_task(MEAN)
    parser = argparse.ArgumentParser()
    add_task_parser(parser.add_subparsers(), MEAN)

    def run(*argv):
        args = parser.parse_args(argv)
        return args.func(args)

    MeanTask.calls.clear()
    common = (
        "--batch",
        "8",
        "--lr",
        "0.01",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--project",
        str(tmp_path),
        "--name",
        "r",
    )
    assert run("meanpix", "train", "--epochs", "2", *common) == 0
    run_dir = tmp_path / "r"
    r = rows(run_dir)
    assert [x["epoch"] for x in r] == ["1", "2"] and {"train/mse", "val/mse", "val/r2", "val/mae"} <= set(r[0])
    assert MeanTask.calls["epochs"] == [0, 1] and MeanTask.calls["param_groups"] == [2]
    assert len(MeanTask.calls["sizes"]) > 1  # the preprocess hook ran per batch
    opt = load_checkpoint(run_dir / "weights/last.pt")["optimizer"]
    assert [g["lr"] for g in opt["param_groups"]][1] > [g["lr"] for g in opt["param_groups"]][0]  # its own groups

    assert run("meanpix", "train", "--resume", "--epochs", "3", *common) == 0
    assert "resume: applying --epochs 3 (was 2)" in capsys.readouterr().out
    assert [x["epoch"] for x in rows(run_dir)] == ["1", "2", "3"] and MeanTask.calls["epochs"] == [0, 1, 2]

    best_epoch = max(rows(run_dir), key=lambda x: float(x["val/r2"]))
    assert run("meanpix", "val", "--weights", str(run_dir / "weights/best.pt"), "--data", "-", "--device", "cpu") == 0
    m = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert m["r2"] == pytest.approx(float(best_epoch["val/r2"]), rel=1e-6)  # val without a Trainer = training's val
    assert m["mse"] == pytest.approx(float(best_epoch["val/mse"]), rel=1e-6) and m["skipped"] == 0


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


class _Pairs(SumMetric):
    def stats(self, preds, batch):
        return {"n": float(len(preds)), "sum": preds.sum()}

    def summarize(self, sums):
        return {"mean": float(sums["sum"] / sums["n"])}


class _Boom(GatherMetric):
    def records(self, preds, batch):
        return preds.tolist()

    def evaluate(self, records):
        raise InputError(f"no ground truth for {len(records)} records")


def _metric_worker(rank: int, init: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        pairs, r2, boom = _Pairs(), R2(), _Boom()
        if rank == 0:  # rank 1 sees no batch at all: its sums have no keys
            pairs.update(torch.tensor([1.0, 2.0, 3.0]), {})
        preds = torch.tensor([0.1, 0.5]) + rank
        r2.update(preds, {"targets": preds + 0.1})
        boom.update(preds, {})
        result = {"pairs": pairs.compute(), "r2": r2.compute()}
        try:
            boom.compute()
        except Exception as e:  # raised on both ranks, not a hang on rank 1
            result["boom"] = f"{type(e).__name__}: {e}"
        (Path(out) / f"{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_metrics_reduce_and_gather_across_two_processes(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_metric_worker, args=(f"file://{tmp_path / 'init'}", str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1))
    assert r0["pairs"] == r1["pairs"] == {"mean": 2.0}
    assert r0["r2"] == r1["r2"] and r0["r2"]["mae"] == pytest.approx(0.1)  # 4 pairs from 2 ranks, evaluated once
    assert "no ground truth for 4 records" in r0["boom"] and "no ground truth for 4 records" in r1["boom"]
