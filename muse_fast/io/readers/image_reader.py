"""Plain images (PNG, JPEG, non-pyramidal TIFF) held in memory as one level."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..metadata import Resolution
from .base import read_padded

Image.MAX_IMAGE_PIXELS = 1_000_000_000  # large tiles are legitimate here


class ImageReader:
    backend = "image"
    suffixes = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

    def __init__(self, path: Path) -> None:
        with Image.open(path) as im:
            dpi = im.info.get("dpi")
            self._pixels = np.asarray(im.convert("RGB"))
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
