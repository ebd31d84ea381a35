"""cuCIM backend: the fast path for SVS and generic tiled TIFF."""

from __future__ import annotations

from pathlib import Path

import numpy as np

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
        self.mpp = self._mpp()

    def _mpp(self) -> float | None:
        meta = self._img.metadata
        aperio = meta.get("aperio", {}) if isinstance(meta, dict) else {}
        if "MPP" in aperio:
            return float(aperio["MPP"])
        return None

    def _read_inside(self, x: int, y: int, w: int, h: int, level: int) -> np.ndarray:
        region = np.asarray(self._img.read_region(location=(x, y), size=(w, h), level=level))
        return region[..., :3]

    def read_region(self, x: int, y: int, width: int, height: int, level: int = 0) -> np.ndarray:
        return read_padded(
            self._read_inside, self.level_dimensions[level], self.level_downsamples[level], x, y, width, height, level
        )

    def close(self) -> None:
        self._img.close()
