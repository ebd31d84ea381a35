"""tiffslide backend (pure Python over tifffile/zarr): SVS, generic TIFF, OME-TIFF."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..metadata import from_properties
from .base import read_padded


class TiffSlideReader:
    backend = "tiffslide"
    suffixes = (".svs", ".tif", ".tiff", ".ndpi", ".scn")

    def __init__(self, path: Path) -> None:
        import tiffslide

        self.path = path
        self._slide = tiffslide.TiffSlide(str(path))
        _check_pixel_format(self._slide.ts_tifffile.series[0].levels[0].keyframe)
        self.level_dimensions = [tuple(d) for d in self._slide.level_dimensions]
        self.level_downsamples = [float(d) for d in self._slide.level_downsamples]
        self.resolution = from_properties(self._slide.properties, "tiffslide", "tiffslide mpp-x/y")
        self.mpp = None

    def _read_inside(self, x: int, y: int, w: int, h: int, level: int) -> np.ndarray:
        return np.asarray(self._slide.read_region((x, y), level, (w, h), as_array=True))[..., :3]

    def read_region(self, x: int, y: int, width: int, height: int, level: int = 0) -> np.ndarray:
        return read_padded(
            self._read_inside, self.level_dimensions[level], self.level_downsamples[level], x, y, width, height, level
        )

    def close(self) -> None:
        self._slide.close()


def _check_pixel_format(page) -> None:
    """tiffslide returns CMYK, palette and alpha channels as if they were RGB: refuse them (OpenSlide converts)."""
    photometric = int(page.photometric)
    if photometric not in (1, 2, 6) or page.extrasamples or page.bitspersample not in (8, 16):
        raise ValueError(
            f"tiffslide cannot convert this pixel format (photometric {photometric}, {page.samplesperpixel} samples,"
            f" {page.bitspersample} bits)"
        )
