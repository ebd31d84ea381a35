"""cuCIM backend: the fast path for SVS and generic tiled TIFF."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..metadata import Resolution
from .base import read_padded


class CuCIMReader:
    backend = "cucim"
    suffixes = (".svs", ".tif", ".tiff")

    def __init__(self, path: Path) -> None:
        from cucim import CuImage  # heavy import, only when this backend is used

        self.path = path
        self._img = CuImage(str(path))
        res = self._img.resolutions
        self.level_dimensions = [tuple(int(v) for v in d) for d in res["level_dimensions"]]
        self.level_downsamples = [float(d) for d in res["level_downsamples"]]
        meta = self._img.metadata
        aperio = meta.get("aperio", {}) if isinstance(meta, dict) else {}
        mpp = float(aperio["MPP"]) if "MPP" in aperio else None
        self.resolution = Resolution(mpp, mpp, "Aperio MPP (cuCIM)") if mpp else None
        self.mpp = None

    def _read_inside(self, x: int, y: int, w: int, h: int, level: int) -> np.ndarray:
        region = np.asarray(self._img.read_region(location=(x, y), size=(w, h), level=level))
        return region[..., :3]

    def read_region(self, x: int, y: int, width: int, height: int, level: int = 0) -> np.ndarray:
        return read_padded(
            self._read_inside, self.level_dimensions[level], self.level_downsamples[level], x, y, width, height, level
        )

    def read_regions(self, origins: list[tuple[int, int]], size: int, level: int, workers: int) -> list[np.ndarray]:
        """Many ``size x size`` regions at once with cuCIM's threaded multi-location reader.

        Regions that cross the slide border go through :meth:`read_region` (white padding); each region is copied
        out of cuCIM's iterator at once, because the iterator reuses its buffer.
        """
        w, h = self.level_dimensions[level]
        d = self.level_downsamples[level]
        inside = [i for i, (x, y) in enumerate(origins) if x / d + size <= w and y / d + size <= h]
        out: list[np.ndarray | None] = [None] * len(origins)
        if len(inside) > 1:
            locations = [origins[i] for i in inside]
            regions = self._img.read_region(locations, (size, size), level, num_workers=max(1, workers))
            for i, region in zip(inside, regions):
                out[i] = np.array(region, copy=True)[..., :3]
        for i, (x, y) in enumerate(origins):
            if out[i] is None:
                out[i] = self.read_region(x, y, size, size, level)
        return out

    def close(self) -> None:
        self._img.close()
