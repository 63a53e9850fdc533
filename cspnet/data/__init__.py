"""Datasets: image folders and zip archives of them, transforms v2 pipelines, skipping of unreadable images."""

from cspnet.data.datasets import ImageDataset, ImageFolderDataset, ZipImageDataset, open_split
from cspnet.data.transforms import Collate, batch_mix, eval_transform, train_transform

__all__ = [
    "Collate",
    "ImageDataset",
    "ImageFolderDataset",
    "ZipImageDataset",
    "batch_mix",
    "eval_transform",
    "open_split",
    "train_transform",
]
