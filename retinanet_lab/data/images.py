"""Reading image files the way a detector needs them, with errors that name the file.

- EXIF orientation is applied (phones store portrait photos as rotated landscape pixels plus a tag;
  labelling tools show, and label, the rotated image), so boxes drawn on the upright image stay right;
- grayscale, RGBA, palette (P), CMYK and 16-bit (I;16, I) images become 8-bit RGB;
- a corrupt or truncated file and an absurdly large image (Pillow's decompression-bomb guard) raise
  a `ImageLoadError` naming the path, instead of a bare Pillow traceback or a hang.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import UserError

__all__ = ["ImageLoadError", "load_image", "to_tensor"]


class ImageLoadError(UserError, RuntimeError):
    """An image file that cannot be used; the message names the file (a UserError: the command line prints it in one line)."""


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16/32-bit: scale to 8 bits by the actual range
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(arr)
        img = Image.fromarray(arr.astype(np.uint8))
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):  # transparent pixels onto white, as viewers show them
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img.convert("RGBA"))
    return img.convert("RGB")


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open `path` as an upright 8-bit RGB PIL image."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                img = ImageOps.exif_transpose(img)
                return _to_rgb(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageLoadError(f"{path}: image is too large to load safely ({e}); raise PIL.Image.MAX_IMAGE_PIXELS "
                             "if you trust this file") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageLoadError(f"{path}: not a readable image (corrupt or truncated?): {e}") from e


def to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL RGB image -> (3, H, W) float tensor in [0, 1]."""
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255)
