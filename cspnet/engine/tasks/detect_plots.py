"""Detection plots (PNG, matplotlib Agg): PR curves, label statistics, training batches with their boxes drawn."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from cspnet.data.detection import DetSource  # noqa: E402
from cspnet.engine.plots import save_figure  # noqa: E402


def plot_pr_curve(precision: np.ndarray | None, cat_ids: list[int], source: DetSource, path: str | Path) -> Path:
    """Precision vs recall at IoU 0.5 (COCOeval's 101 recall points): one thin line per class, the mean in bold."""
    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    recall = np.linspace(0, 1, 101)
    if precision is not None:
        p = precision[0, :, :, 0, -1]  # (R, K)
        names = dict(zip(source.category_ids, source.names))
        valid = [k for k in range(p.shape[1]) if (p[:, k] > -1).all()]
        for k in valid:
            label = f"{names[cat_ids[k]]} {p[:, k].mean():.3f}" if len(valid) <= 10 else None
            ax.plot(recall, p[:, k], lw=0.8, alpha=0.6, label=label)
        if valid:
            ax.plot(
                recall, p[:, valid].mean(1), lw=2.5, color="k", label=f"all classes {p[:, valid].mean():.3f} mAP@0.5"
            )
        ax.legend(fontsize=7, loc="lower left")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="precision-recall (IoU 0.5)")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_labels(source: DetSource, path: str | Path) -> Path:
    """Boxes per class, box centres and box sizes (relative to the image) of a training set."""
    nc = len(source.names)
    counts = np.zeros(nc, np.int64)
    rel = []
    for r in source.records:
        np.add.at(counts, r.classes, 1)
        if len(r.boxes):
            b = r.boxes / np.array([r.width, r.height, r.width, r.height], np.float32)
            rel.append(np.concatenate([(b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]], 1))
    rel = np.concatenate(rel) if rel else np.zeros((0, 4))
    fig, ax = plt.subplots(1, 3, figsize=(13, 4), dpi=100)
    ax[0].bar(range(nc), counts)
    ax[0].set(title=f"boxes per class ({counts.sum()} boxes, {len(source.records)} images)", ylabel="boxes")
    if nc <= 30:
        ax[0].set_xticks(range(nc), source.names, rotation=90, fontsize=7)
    ax[1].hist2d(rel[:, 0], rel[:, 1], bins=30, range=[[0, 1], [0, 1]], cmap="Blues")
    ax[1].set(title="box centres", xlabel="x", ylabel="y")
    ax[1].invert_yaxis()
    ax[2].hist2d(rel[:, 2], rel[:, 3], bins=30, range=[[0, 1], [0, 1]], cmap="Blues")
    ax[2].set(title="box sizes", xlabel="width", ylabel="height")
    return save_figure(fig, path)


def plot_batch(
    images: torch.Tensor, targets: torch.Tensor, names: list[str], path: str | Path, max_images: int = 16
) -> Path:
    """A grid of a batch's (uint8 or 0..1 float) images with their target boxes and class names drawn."""
    from PIL import Image
    from torchvision.utils import draw_bounding_boxes, make_grid

    images = images[:max_images].detach().cpu()
    if images.dtype != torch.uint8:
        images = (images.float().clamp(0, 1) * 255).round().to(torch.uint8)
    targets = targets.detach().cpu()
    drawn = []
    for i, img in enumerate(images):
        t = targets[targets[:, 0] == i]
        labels = [names[int(c)] for c in t[:, 1]]
        drawn.append(draw_bounding_boxes(img, t[:, 2:6], labels, colors="yellow", width=1) if len(t) else img)
    grid = make_grid(drawn, nrow=int(np.ceil(np.sqrt(len(drawn)))), padding=2, pad_value=255)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(path)
    return path
