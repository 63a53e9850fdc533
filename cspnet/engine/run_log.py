"""A run's records on rank 0: args.yaml, results.csv (one row an epoch), TensorBoard scalars, a line an epoch on
stdout, and the PNG plots of results.csv when the run ends."""

from __future__ import annotations

import csv
from pathlib import Path

import yaml

from cspnet.io import atomic_write


class RunLog:
    """`start()` once, call with each epoch's metrics (a dict with "epoch"), `close()` at the end (writes the plots).

    `shown`: the metrics printed on the epoch's line, when logged.
    """

    def __init__(self, save_dir: str | Path, args: dict, epochs: int, shown: tuple[str, ...]):
        self.save_dir, self.args, self.epochs, self.shown = Path(save_dir), args, epochs, shown
        self.csv = self.save_dir / "results.csv"
        self.writer = None

    def start(self, resumed: bool, start_epoch: int = 0) -> None:
        """args.yaml and a results.csv to append to: on resume, cut back to the checkpoint's epochs."""
        from torch.utils.tensorboard import SummaryWriter

        self.save_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.save_dir / "args.yaml", lambda f: f.write(yaml.safe_dump(self.args, sort_keys=False)), "w")
        if resumed and self.csv.exists():  # drop rows after the checkpoint (killed between csv and checkpoint)
            write_csv(self.csv, [r for r in read_csv(self.csv) if int(r["epoch"]) <= start_epoch])
        elif self.csv.exists():
            self.csv.unlink()
        self.writer = SummaryWriter(str(self.save_dir))

    def __call__(self, m: dict) -> None:
        write_csv(self.csv, [*read_csv(self.csv), m])
        for k, v in m.items():
            if k != "epoch":
                self.writer.add_scalar(k, v, m["epoch"])
        self.writer.flush()
        line = " ".join(f"{k}={m[k]:.4g}" for k in self.shown if k in m)
        print(f"epoch {m['epoch']}/{self.epochs} {line}", flush=True)

    def close(self) -> None:
        """Close TensorBoard and plot results.csv (loss.png, metrics.png, lr.png), if logging started."""
        if self.writer is None:
            return
        self.writer.close()
        self.writer = None
        if self.csv.exists():
            from cspnet.engine.plots import plot_results

            plot_results(self.csv)


def read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def write_csv(path: Path, rows: list[dict]) -> None:
    """Rows under the last row's header, written atomically (a kill leaves the old file whole)."""

    def write(f) -> None:
        if rows:
            w = csv.DictWriter(f, fieldnames=list(rows[-1]))
            w.writeheader()
            w.writerows(rows)

    atomic_write(path, write, mode="w")
