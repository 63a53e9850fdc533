"""A second task plugs in without touching the trainer (per-image regression of the mean pixel value), and the
Metric protocol: a SumMetric and a GatherMetric reduced over ranks."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pytest
import torch

from cspnet.engine import GatherMetric, SumMetric, TaskBase, evaluate, load_checkpoint, load_model
from cspnet.engine.cli import add_eval_args, add_task_parser
from cspnet.engine.run_log import read_csv
from cspnet.engine.task_registry import TaskSpec, register_task
from cspnet.errors import InputError


def rows(run) -> list[dict]:
    return read_csv(run / "results.csv")


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


def test_a_hook_stops_training_early_after_the_epochs_checkpoints(tmp_path):
    """trainer.stop set in on_epoch_end ends the run after that epoch: its row, best.pt and last.pt are written, and
    fit returns normally (early stopping, a plateau criterion)."""
    from cspnet.engine import Trainer
    from cspnet.engine.config import TrainCfg

    class Stops(MeanTask):
        def on_epoch_end(self, trainer, epoch, metrics):
            trainer.stop = epoch == 1

    cfg = TrainCfg(epochs=5, batch=8, lr=0.01, workers=0, device="cpu", save_dir=str(tmp_path / "r"))
    metrics = Trainer(Stops(MeanCfg()), cfg).fit()
    assert metrics["epoch"] == 2 and [r["epoch"] for r in rows(tmp_path / "r")] == ["1", "2"]
    assert load_checkpoint(tmp_path / "r" / "weights/last.pt")["epoch"] == 2
