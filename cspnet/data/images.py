"""One image loader for every task (classification's datasets, detection's read_image): any file PIL reads, as
8-bit RGB, with the value range kept.

PIL's own `convert("RGB")` clips 16- and 32-bit pixel values at 255, so a 16-bit PNG becomes all white; here they
are scaled by range (0..65535 -> 0..255). Transparent pixels are composited over white instead of showing
whatever colour they hide; palette, grayscale and CMYK images become RGB.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps

BACKGROUND = (255, 255, 255)  # under transparent pixels


def to_rgb(img: Image.Image) -> Image.Image:
    """An 8-bit RGB copy of a PIL image of any mode."""
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":  # 16-bit PNG / TIFF (I;16*), or 32-bit ints holding them (I)
        a = np.asarray(img).astype(np.float64)
        img = Image.fromarray(np.clip(np.rint(a / 257.0), 0, 255).astype(np.uint8), "L")
    elif mode == "F":  # float images: 0..1 when they fit, else 0..255
        a = np.asarray(img, dtype=np.float64)
        a = a * 255.0 if np.nanmax(a, initial=0.0) <= 1.0 else a
        img = Image.fromarray(np.clip(np.nan_to_num(np.rint(a)), 0, 255).astype(np.uint8), "L")
    elif mode == "P":  # palette: its transparency (if any) becomes alpha
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode in ("LA", "La", "PA", "RGBa"):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        bg = Image.new("RGB", img.size, BACKGROUND)
        bg.paste(img, mask=img.getchannel("A"))
        return bg
    if img.mode == "L" and "transparency" in img.info:
        return to_rgb(img.convert("LA"))
    return img.copy() if img.mode == "RGB" else img.convert("RGB")


def load_image(
    src: str | Path | bytes | IO[bytes], exif_transpose: bool = True, long_side: int | None = None
) -> Image.Image:
    """Decode an image file (path, bytes or file object) fully into 8-bit RGB.

    Raises what PIL raises for unreadable files (callers that skip bad files catch Exception). With
    exif_transpose the EXIF orientation is applied, as photo viewers show the image; a detection dataset whose
    boxes refer to the stored pixels passes False. long_side: a JPEG may be decoded at 1/2, 1/4 or 1/8 scale (PIL
    draft mode, much faster) while its long side stays at least this.
    """
    if isinstance(src, bytes | bytearray):
        src = io.BytesIO(src)
    with Image.open(src) as im:
        if long_side and im.format == "JPEG":
            w, h = im.size
            k = max(w, h) / long_side
            if k >= 2:
                im.draft("RGB", (math.ceil(w / k), math.ceil(h / k)))
        im.load()  # decode now: a truncated file fails here, not in a transform
        if exif_transpose:
            im = ImageOps.exif_transpose(im)
        return to_rgb(im)
