"""Datasets: one image loader (load_image), image folders and zip archives of them, transforms v2 pipelines, skipping of unreadable images."""

from cspnet.data.datasets import ImageDataset, ImageFolderDataset, ZipImageDataset, open_split
from cspnet.data.images import load_image, to_rgb
from cspnet.data.transforms import Collate, batch_mix, eval_transform, train_transform

__all__ = [
    "Collate",
    "ImageDataset",
    "ImageFolderDataset",
    "ZipImageDataset",
    "batch_mix",
    "eval_transform",
    "load_image",
    "open_split",
    "to_rgb",
    "train_transform",
]
