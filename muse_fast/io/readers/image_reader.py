"""Plain images (PNG, JPEG, non-pyramidal TIFF) held in memory as one level."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

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
        # PIL reports resolution as dots per inch; 25400 um per inch. Values of 1 or 72 dpi are placeholders.
        self.mpp = 25400.0 / float(dpi[0]) if dpi and float(dpi[0]) > 100 else None

    def _read_inside(self, x: int, y: int, w: int, h: int, level: int) -> np.ndarray:
        return self._pixels[y : y + h, x : x + w]

    def read_region(self, x: int, y: int, width: int, height: int, level: int = 0) -> np.ndarray:
        return read_padded(self._read_inside, self.level_dimensions[0], 1.0, x, y, width, height, 0)

    def close(self) -> None:
        self._pixels = np.zeros((0, 0, 3), np.uint8)
