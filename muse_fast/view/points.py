"""The nuclei of one run in memory, and the viewport queries the page makes: points, aggregated bins, nearest.

Level of detail: a viewport holding at most ``max_points`` nuclei of the enabled classes gets every point; a larger
one gets bins of a few screen pixels, each with its dominant class, so the page draws at most about one item per
screen pixel whatever the slide holds.
"""

from __future__ import annotations

import importlib.util
import logging
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..output.regular import is_regular

log = logging.getLogger(__name__)

MAX_POINTS = 200_000
BIN_SCREEN_PX = 3  # side of an aggregation bin, in screen pixels
MAX_BINS = 1_000_000
MODE_POINTS, MODE_BINS = 0, 1
MAX_COORD = 1e9  # far beyond any slide; keeps box arithmetic finite
MAX_CLASSES = 255  # class ids go to the page as uint8


@dataclass
class Box:
    """A level-0 query box and the page's scale (level-0 pixels per screen pixel)."""

    x0: float
    y0: float
    x1: float
    y1: float
    scale: float

    def check(self) -> Box:
        values = (self.x0, self.y0, self.x1, self.y1, self.scale)
        if not all(abs(v) <= MAX_COORD for v in values):  # also refuses NaN and inf
            raise ValueError(f"coordinates and scale must be finite and within +-{MAX_COORD:g} level-0 pixels")
        if self.x1 <= self.x0 or self.y1 <= self.y0 or self.scale <= 0:
            raise ValueError("need x0 < x1, y0 < y1 and scale > 0")
        return self


class PointTable:
    """``x``, ``y`` (float32, level-0 px), ``class_id``, ``score`` and ``class_probability`` of every nucleus."""

    def __init__(self, x, y, class_id, score, prob, n_classes: int) -> None:
        self.x = np.asarray(x, np.float32)
        self.y = np.asarray(y, np.float32)
        self.class_id = np.asarray(class_id, np.int64)
        self.score = np.asarray(score, np.float32)
        self.prob = np.asarray(prob, np.float32)
        self.n_classes = n_classes
        if len(self.class_id) and (self.class_id.min() < 0 or self.class_id.max() >= n_classes):
            raise InputError(f"class_id outside 0..{n_classes - 1} in the nuclei table; rerun muse-fast infer")

    def __len__(self) -> int:
        return len(self.x)

    @classmethod
    def load(cls, path: Path, n_classes: int) -> PointTable:
        """Read ``infer``'s Parquet (with pyarrow) or CSV table."""
        columns = ["x", "y", "class_id", "score", "class_probability"]
        try:
            if path.suffix == ".parquet":
                import pyarrow.parquet as pq

                table = pq.read_table(path, columns=columns)
                data = {c: table.column(c).to_numpy() for c in columns}
            else:
                import pandas as pd

                frame = pd.read_csv(path, usecols=columns, dtype={c: "float64" for c in columns})
                data = {c: frame[c].to_numpy() for c in columns}
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"cannot read the nuclei table {path.name} ({exc}); rerun muse-fast infer") from exc
        ids = data["class_id"]
        if len(ids) and not np.array_equal(ids, np.round(ids)):  # also NaN: a damaged or cut-off table
            raise InputError(f"the nuclei table {path.name} holds class ids that are not whole numbers; rerun infer")
        return cls(data["x"], data["y"], ids, data["score"], data["class_probability"], n_classes)

    @classmethod
    def load_first(cls, paths: list[Path], n_classes: int) -> PointTable:
        """The first of ``paths`` (Parquet, then CSV) that reads; a damaged Parquet falls back to the CSV, said once."""
        for i, path in enumerate(paths):
            try:
                return cls.load(path, n_classes)
            except InputError as exc:
                if i == len(paths) - 1:
                    raise
                log.warning("%s; reading %s instead", exc, paths[i + 1].name)
        raise InputError("no nuclei table")

    def _mask(self, box: Box, classes: np.ndarray) -> np.ndarray:
        keep = (self.x >= box.x0) & (self.x < box.x1) & (self.y >= box.y0) & (self.y < box.y1)
        if len(classes) < self.n_classes:
            keep &= np.isin(self.class_id, classes)
        return keep

    def query(self, box: Box, classes: np.ndarray, max_points: int = MAX_POINTS) -> bytes:
        """Binary reply: header ``<iif>`` (mode, n, bin side in level-0 px), then ``float32 x[n]``, ``float32 y[n]``,
        ``uint8 class[n]``. Points when at most ``max_points`` are in the box, else dominant-class bins (centres)."""
        keep = np.flatnonzero(self._mask(box, classes))
        if len(keep) <= max_points:
            x, y, c = self.x[keep], self.y[keep], self.class_id[keep]
            return _pack(MODE_POINTS, 0.0, x, y, c)
        side = box.scale * BIN_SCREEN_PX
        cols = max(1, int(np.ceil((box.x1 - box.x0) / side)))
        rows = max(1, int(np.ceil((box.y1 - box.y0) / side)))
        while cols * rows > MAX_BINS:  # a request for a huge box at a tiny scale: coarser bins
            side *= 2
            cols, rows = max(1, int(np.ceil((box.x1 - box.x0) / side))), max(1, int(np.ceil((box.y1 - box.y0) / side)))
        col = np.minimum(((self.x[keep] - box.x0) / side).astype(np.int64), cols - 1)
        row = np.minimum(((self.y[keep] - box.y0) / side).astype(np.int64), rows - 1)
        n = self.n_classes
        counts = np.bincount((row * cols + col) * n + self.class_id[keep], minlength=rows * cols * n).reshape(-1, n)
        filled = np.flatnonzero(counts.sum(1))
        dominant = counts[filled].argmax(1)
        x = box.x0 + (filled % cols + 0.5) * side
        y = box.y0 + (filled // cols + 0.5) * side
        return _pack(MODE_BINS, side, x, y, dominant)

    def nearest(self, x: float, y: float, radius: float, classes: np.ndarray) -> int | None:
        """Row of the nucleus of an enabled class nearest to (x, y) within ``radius`` level-0 px, or None."""
        box = Box(x - radius, y - radius, x + radius, y + radius, 1.0)
        rows = np.flatnonzero(self._mask(box, classes))
        if len(rows) == 0:
            return None
        d2 = (self.x[rows] - x) ** 2 + (self.y[rows] - y) ** 2
        best = int(np.argmin(d2))
        return int(rows[best]) if d2[best] <= radius * radius else None


def _pack(mode: int, side: float, x: np.ndarray, y: np.ndarray, c: np.ndarray) -> bytes:
    n = len(x)
    return b"".join(
        (
            struct.pack("<iif", mode, n, side),
            np.asarray(x, "<f4").tobytes(),
            np.asarray(y, "<f4").tobytes(),
            np.asarray(c, np.uint8).tobytes(),
        )
    )


def tables_for(out_dir: Path, stem: str, listed: dict) -> list[Path]:
    """The run's tables in the order to try them: Parquet when pyarrow can read it, then CSV (only files the manifest
    lists, never through a link)."""
    suffixes = ("parquet", "csv") if importlib.util.find_spec("pyarrow") else ("csv",)
    paths = [Path(out_dir) / f"{stem}.{suffix}" for suffix in suffixes]
    return [p for p in paths if p.name in listed and is_regular(p)]
