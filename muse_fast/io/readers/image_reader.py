"""Plain images (PNG, JPEG, non-pyramidal TIFF) held in memory as one level."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..metadata import Resolution
from .base import as_rgb_uint8, read_padded, rgba_to_rgb

Image.MAX_IMAGE_PIXELS = 1_000_000_000  # large tiles are legitimate here


class ImageReader:
    backend = "image"
    suffixes = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

    def __init__(self, path: Path) -> None:
        with Image.open(path) as im:
            dpi = im.info.get("dpi")
            self._pixels = to_rgb(im)
        self.path = path
        h, w = self._pixels.shape[:2]
        self.level_dimensions = [(w, h)]
        self.level_downsamples = [1.0]
        # PIL reports resolution as dots per inch (25400 um per inch); 1, 72, 96 or 300 dpi are software defaults.
        real = dpi and all(float(d) > 300 for d in dpi[:2])
        self.resolution = Resolution(25400.0 / float(dpi[0]), 25400.0 / float(dpi[1]), "image dpi") if real else None
        self.mpp = None

    def _read_inside(self, x: int, y: int, w: int, h: int, level: int) -> np.ndarray:
        return self._pixels[y : y + h, x : x + w]

    def read_region(self, x: int, y: int, width: int, height: int, level: int = 0) -> np.ndarray:
        return read_padded(self._read_inside, self.level_dimensions[0], 1.0, x, y, width, height, 0)

    def close(self) -> None:
        self._pixels = np.zeros((0, 0, 3), np.uint8)


def to_rgb(im: Image.Image) -> np.ndarray:
    """8-bit RGB pixels of a PIL image: alpha composited over white (alpha 0 is glass), palette and CMYK converted.

    Single-channel images of more than 8 bits are scaled to 8 bits (the grayscale check in ``open_slide`` then
    refuses them with the reason).
    """
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        samples = np.asarray(im)
        wide = im.mode.startswith("I;16") or samples.max() > 255
        return as_rgb_uint8(samples.clip(0, 65535).astype(np.uint16 if wide else np.uint8))
    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
    if not has_alpha:
        return np.asarray(im.convert("RGB"))
    return rgba_to_rgb(np.asarray(im.convert("RGBA")))
