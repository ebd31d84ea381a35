"""Tile grids with overlap, and the ownership rule that removes duplicates between overlapping tiles.

Coordinates here are in *model pixels* (the slide resampled to the model's mpp). Along each axis, tiles of side
``tile`` start evenly spaced so that the first starts at 0 and the last ends at the image edge (one tile when the
image is shorter than a tile, padded on the far side). Neighbouring tiles overlap by at least ``overlap`` pixels.

Ownership: each tile owns the half-open interval between the midpoints to its neighbours' centres, per axis
(its *core*). Cores partition the image, so every nucleus is kept by exactly one tile, and a core lies at least
``overlap / 2`` pixels inside its tile wherever a neighbour exists, so kept nuclei always have context.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tile:
    x: int  # tile origin (model pixels)
    y: int
    core: tuple[float, float, float, float]  # (x0, y0, x1, y1), half-open, in model pixels

    def owns(self, xy: np.ndarray, grow: float = 0.0) -> np.ndarray:
        """Bool mask of the points ``xy [N, 2]`` (x, y, model pixels) in this tile's core, grown (or shrunk, when
        negative) by ``grow`` pixels on every side."""
        x0, y0, x1, y1 = self.core
        x, y = xy[:, 0], xy[:, 1]
        return (x >= x0 - grow) & (x < x1 + grow) & (y >= y0 - grow) & (y < y1 + grow)


def axis_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Evenly spaced tile starts covering ``[0, length)`` with at least ``overlap`` between neighbours."""
    if tile <= overlap:
        raise ValueError(f"tile ({tile}) must be larger than overlap ({overlap})")
    if length <= tile:
        return [0]
    n = math.ceil((length - tile) / (tile - overlap)) + 1
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def axis_cores(starts: list[int], tile: int) -> list[tuple[float, float]]:
    centres = [s + tile / 2 for s in starts]
    bounds = [-math.inf] + [(a + b) / 2 for a, b in zip(centres, centres[1:])] + [math.inf]
    return list(zip(bounds[:-1], bounds[1:]))


def tile_grid(width: int, height: int, tile: int, overlap: int) -> list[Tile]:
    """All tiles of a ``width x height`` image, row-major, with their ownership cores."""
    xs, ys = axis_starts(width, tile, overlap), axis_starts(height, tile, overlap)
    xc, yc = axis_cores(xs, tile), axis_cores(ys, tile)
    return [Tile(x, y, (cx[0], cy[0], cx[1], cy[1])) for y, cy in zip(ys, yc) for x, cx in zip(xs, xc)]
