"""OpenSlide backend (openslide-bin wheels): SVS, NDPI, MRXS, SCN, generic TIFF, ..."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..metadata import from_properties
from .base import read_padded, rgba_to_rgb


class OpenSlideReader:
    backend = "openslide"
    suffixes = (".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif")

    def __init__(self, path: Path) -> None:
        import openslide

        self.path = path
        self._slide = openslide.OpenSlide(str(path))
        self.level_dimensions = [tuple(d) for d in self._slide.level_dimensions]
        self.level_downsamples = [float(d) for d in self._slide.level_downsamples]
        self.resolution = from_properties(self._slide.properties, "openslide", "openslide mpp-x/y")
        self.mpp = None

    def _read_inside(self, x: int, y: int, w: int, h: int, level: int) -> np.ndarray:
        return rgba_to_rgb(np.asarray(self._slide.read_region((x, y), level, (w, h))))

    def read_region(self, x: int, y: int, width: int, height: int, level: int = 0) -> np.ndarray:
        return read_padded(
            self._read_inside, self.level_dimensions[level], self.level_downsamples[level], x, y, width, height, level
        )

    def close(self) -> None:
        self._slide.close()
