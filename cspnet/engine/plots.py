"""PNG plots of a run's results.csv (loss, metrics, learning rate) and of a confusion matrix; matplotlib Agg."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NOT_PLOTTED = {"epoch", "img_s", "skipped"}


def save_figure(fig, path: str | Path, dpi: float | str = "figure") -> Path:
    """Lay out, write (making the folder) and close a figure; returns its path. dpi: the figure's own by default."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def plot_results(csv_path: str | Path) -> list[Path]:
    """loss.png, metrics.png (accuracy, mAP, ...) and lr.png beside results.csv, one line per column, vs epoch."""
    csv_path = Path(csv_path)
    rows = list(csv.DictReader(csv_path.open()))
    if not rows:
        return []
    epochs = [int(r["epoch"]) for r in rows]
    cols = [k for k in rows[0] if k not in NOT_PLOTTED]
    groups = {
        "loss": [k for k in cols if "loss" in k],
        "lr": [k for k in cols if k == "lr"],
        "metrics": [k for k in cols if "loss" not in k and k != "lr"],
    }
    out = []
    for name, keys in groups.items():
        if not keys:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
        for k in keys:
            ax.plot(epochs, [float(r[k]) for r in rows], marker=".", label=k)
        ax.set_xlabel("epoch")
        ax.set_title({"loss": "loss", "lr": "learning rate", "metrics": "metrics"}[name])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        out.append(save_figure(fig, csv_path.with_name(f"{name}.png")))
    return out


def plot_confusion(confusion: list[list[int]], classes: list[str], path: str | Path) -> Path:
    """Row-normalised confusion matrix (rows: true class, columns: predicted)."""
    import numpy as np

    cm = np.asarray(confusion, dtype=float)
    cm = cm / np.clip(cm.sum(1, keepdims=True), 1, None)
    n = len(classes)
    size = min(4 + 0.35 * n, 20)
    fig, ax = plt.subplots(figsize=(size, size), dpi=100)
    im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=1)
    if n <= 50:
        ax.set_xticks(range(n), classes, rotation=90, fontsize=7)
        ax.set_yticks(range(n), classes, fontsize=7)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(
                    j, i, f"{cm[i, j]:.2f}", ha="center", va="center", fontsize=6, color="w" if cm[i, j] > 0.5 else "k"
                )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(im, fraction=0.046)
    return save_figure(fig, path)
