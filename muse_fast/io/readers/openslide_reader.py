"""OpenSlide backend (openslide-bin wheels): SVS, NDPI, MRXS, SCN, generic TIFF, ..."""

from __future__ import annotations

import threading
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
        self._lock = threading.Lock()
        self._in_flight = 0
        self._retired: list = []

    def _read_inside(self, x: int, y: int, w: int, h: int, level: int) -> np.ndarray:
        import openslide

        with self._lock:
            handle = self._slide
            self._in_flight += 1
        try:
            return rgba_to_rgb(np.asarray(handle.read_region((x, y), level, (w, h))))
        except openslide.OpenSlideError:
            # after a failed decode an OpenSlide handle fails every read: later reads get a fresh handle
            with self._lock:
                if handle is self._slide:
                    self._retired.append(handle)
                    self._slide = openslide.OpenSlide(str(self.path))
            raise
        finally:
            with self._lock:
                self._in_flight -= 1
                if not self._in_flight:  # close retired handles once no thread reads from them
                    for old in self._retired:
                        old.close()
                    self._retired.clear()

    def read_region(self, x: int, y: int, width: int, height: int, level: int = 0) -> np.ndarray:
        return read_padded(
            self._read_inside, self.level_dimensions[level], self.level_downsamples[level], x, y, width, height, level
        )

    def close(self) -> None:
        self._slide.close()
