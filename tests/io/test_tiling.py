"""Tile grids cover the image, overlap enough, and their cores own every point exactly once."""

import numpy as np
import pytest

from muse_fast.io.tiling import axis_starts, tile_grid


@pytest.mark.parametrize("length", [1, 100, 224, 225, 400, 491, 1000, 2967])
def test_axis_starts_cover_with_overlap(length):
    starts = axis_starts(length, 224, 32)
    assert starts[0] == 0
    assert starts[-1] + 224 >= length
    if length >= 224:
        assert starts[-1] + 224 == length  # last tile ends at the edge: no padding needed
    for a, b in zip(starts, starts[1:]):
        assert 0 < b - a <= 224 - 32


@pytest.mark.parametrize("w,h", [(491, 491), (1000, 300), (224, 224), (100, 60), (2220, 2967)])
def test_cores_partition_the_image(w, h):
    tiles = tile_grid(w, h, 224, 32)
    rng = np.random.default_rng(0)
    pts = np.concatenate(
        [
            rng.uniform(0, [w, h], size=(5000, 2)),
            np.array([[t.core[0], t.core[1]] for t in tiles if np.isfinite(t.core[0] + t.core[1])]).reshape(-1, 2),
        ]
    )
    owners = np.stack([t.owns(pts) for t in tiles])
    assert (owners.sum(0) == 1).all()


def test_cores_keep_context_from_the_tile_edge():
    tiles = tile_grid(1000, 700, 224, 32)
    for t in tiles:
        x0, y0, x1, y1 = t.core
        if np.isfinite(x0):
            assert x0 - t.x >= 16
        if np.isfinite(x1):
            assert t.x + 224 - x1 >= 16
        if np.isfinite(y0):
            assert y0 - t.y >= 16
        if np.isfinite(y1):
            assert t.y + 224 - y1 >= 16


def test_overlap_must_be_smaller_than_tile():
    with pytest.raises(ValueError):
        axis_starts(500, 32, 32)
