"""Unlabelled ROIs with nucleus coordinates, stored in chunks that stream (one ``.npz`` per chunk + an index).

Layout of a store folder::

    index.json            {"mpp": 0.5, "size": 320, "chunks": ["chunk_00000.npz", ...], "count": N, "sources": [...],
                           "detector": "hema"}  (how nucleus positions were found; absent in older stores)
    chunk_00000.npz       image_00000 ... uint8 [s_j, s_j, 3], one per ROI; mpp float64 [n]; xy float32 [total, 2];
                          offsets int64 [n + 1]

Each ROI keeps its own resolution: ``mpp[j]`` is the store's ``mpp`` or, for slides scanned finer, the slide's native
mpp (so 40x views exist where the scan has them). Every ROI covers the same field, ``size * mpp`` um square, so
``s_j = round(size * mpp / mpp[j])``. Nucleus ``i`` of ROI ``j`` is ``xy[offsets[j] + i]`` in that ROI's pixels (x, y).
Stores written before per-ROI resolution (one stacked ``images`` array, all at the store's mpp) still read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from muse_fast.errors import InputError
from muse_fast.output.atomic import atomic_write


@dataclass
class Roi:
    image: np.ndarray  # uint8 [S, S, 3] at ``mpp``
    xy: np.ndarray  # float32 [N, 2] nucleus positions (x, y) in ROI pixels
    mpp: float | None = None  # um per pixel of ``image``; None = the store's mpp


class RoiWriter:
    def __init__(self, folder: Path, mpp: float, size: int, chunk: int = 64, detector: str = "") -> None:
        self.folder, self.mpp, self.size, self.chunk = Path(folder), mpp, size, chunk
        self.detector = detector
        self.folder.mkdir(parents=True, exist_ok=True)
        self.pending: list[Roi] = []
        self.chunks: list[str] = []
        self.count = 0
        self.sources: list[str] = []

    def add(self, roi: Roi, source: str) -> None:
        mpp = self.mpp if roi.mpp is None else float(roi.mpp)
        side = round(self.size * self.mpp / mpp)
        if roi.image.shape != (side, side, 3):
            raise ValueError(f"a ROI at {mpp} um/px must be {side}x{side}x3 (the store's field), got {roi.image.shape}")
        self.pending.append(Roi(roi.image, roi.xy, mpp))
        self.sources.append(source)
        if len(self.pending) == self.chunk:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        name = f"chunk_{len(self.chunks):05d}.npz"
        offsets = np.cumsum([0] + [len(r.xy) for r in self.pending]).astype(np.int64)
        xy = np.concatenate([r.xy for r in self.pending]).astype(np.float32).reshape(-1, 2)
        images = {f"image_{j:05d}": r.image for j, r in enumerate(self.pending)}
        mpp = np.array([r.mpp for r in self.pending], np.float64)
        with atomic_write(self.folder / name, "wb") as fh:
            np.savez(fh, **images, mpp=mpp, xy=xy, offsets=offsets)
        self.chunks.append(name)
        self.count += len(self.pending)
        self.pending = []

    def close(self) -> Path:
        self._flush()
        index = {
            "mpp": self.mpp,
            "size": self.size,
            "chunks": self.chunks,
            "count": self.count,
            "sources": self.sources,
        }
        if self.detector:
            index["detector"] = self.detector
        path = self.folder / "index.json"
        path.write_text(json.dumps(index, indent=1))
        return path


class RoiStore:
    """Read side: ``len(store)``, random access by index (one chunk cached), iteration in order."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        index_path = self.folder / "index.json"
        if not index_path.is_file():
            raise InputError(
                f"no ROI store at {self.folder} (index.json missing); build one with python -m train.detect_nuclei"
            )
        self.index = json.loads(index_path.read_text())
        self.mpp, self.size = float(self.index["mpp"]), int(self.index["size"])
        sizes = []
        for name in self.index["chunks"]:
            with np.load(self.folder / name) as z:
                sizes.append(len(z["offsets"]) - 1)
        self.starts = np.cumsum([0] + sizes)
        self.field_um = self.size * self.mpp  # every ROI covers this square field (RoiWriter.add checks it)
        self._cache: tuple[int, dict] | None = None

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _chunk(self, c: int) -> dict:
        if self._cache is None or self._cache[0] != c:
            with np.load(self.folder / self.index["chunks"][c]) as z:
                self._cache = (c, {k: z[k] for k in z.files})
        return self._cache[1]

    def __getitem__(self, i: int) -> Roi:
        if not 0 <= i < len(self):
            raise IndexError(i)
        c = int(np.searchsorted(self.starts, i, side="right") - 1)
        z = self._chunk(c)
        j = i - int(self.starts[c])
        xy = z["xy"][z["offsets"][j] : z["offsets"][j + 1]]
        if "images" in z:  # a store from before per-ROI resolution: all at the store's mpp
            return Roi(z["images"][j], xy, self.mpp)
        return Roi(z[f"image_{j:05d}"], xy, float(z["mpp"][j]))

    def __iter__(self) -> Iterator[Roi]:
        for i in range(len(self)):
            yield self[i]
