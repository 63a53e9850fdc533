"""Video files in and out through OpenCV (the optional `cspnet[video]` extra): RGB uint8 (3, H, W) frames."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from cspnet.errors import InputError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def cv2_module():
    """OpenCV, or one line saying how to install it."""
    try:
        import cv2
    except ImportError:
        raise InputError("video input needs OpenCV: pip install 'cspnet[video]' (opencv-python-headless)") from None
    return cv2


def video_fps(path: str | Path) -> float:
    cv2 = cv2_module()
    cap = cv2.VideoCapture(str(path))
    try:
        return cap.get(cv2.CAP_PROP_FPS) or 25.0
    finally:
        cap.release()


def read_frames(path: str | Path) -> Iterator[torch.Tensor]:
    """The frames of a video file in order, as RGB uint8 (3, H, W) tensors."""
    cv2 = cv2_module()
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise InputError(f"cannot open video {path}; is it a video file OpenCV can read?")
    n = 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            n += 1
            yield torch.from_numpy(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)).permute(2, 0, 1).contiguous()
    finally:
        cap.release()
    if n == 0:
        raise InputError(f"no frames could be read from {path}")


class VideoWriter:
    """An .mp4 (mp4v) written frame by frame; the size is taken from the first frame."""

    def __init__(self, path: str | Path, fps: float = 25.0):
        self.path, self.fps, self._writer = Path(path), fps, None

    def write(self, frame: torch.Tensor) -> None:
        cv2 = cv2_module()
        h, w = frame.shape[-2:]
        if self._writer is None:
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
        self._writer.write(cv2.cvtColor(frame.permute(1, 2, 0).numpy(), cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
