"""Tile reads that notice damaged image data, whatever the backend.

Backends show a failed decode differently: OpenSlide raises (and must reopen), tiffslide raises on most damage,
cuCIM returns decoder garbage and prints to fd 2 (see :mod:`.native_output`). A batch is read the fast way first;
only when it raised or a decoder complained is it read again one tile at a time, to name the damaged tiles. Their
pixels are never passed on: the caller gets their indices and reasons.
"""

from __future__ import annotations

import numpy as np

from .blocks import BlockCache
from .native_output import checked_read
from .readers.base import BACKGROUND, SlideReader
from .resample import read_at_scale, read_tiles


def read_one_checked(slide: SlideReader, x: int, y: int, size: int, scale: float) -> tuple[np.ndarray, str | None]:
    """One tile and, when its data could not be decoded, why (its pixels are then white)."""
    tile, reason = checked_read(read_at_scale, slide, x, y, size, scale)
    return (np.full((size, size, 3), BACKGROUND, np.uint8), reason) if reason else (tile, None)


def read_tiles_checked(
    slide: SlideReader,
    origins: list[tuple[int, int]],
    size: int,
    scale: float,
    pool,
    cache: BlockCache | None = None,
) -> tuple[list[np.ndarray], dict[int, str]]:
    """:func:`read_tiles`, plus ``{index in origins: reason}`` for the tiles whose data is damaged. ``cache`` keeps
    the blocks of an undamaged batch only (:mod:`.blocks`); the damaged tiles are read again without it."""
    if cache is None:
        images, reason = checked_read(read_tiles, slide, origins, size, scale, pool)
    else:
        with cache.batch():
            images, reason = checked_read(read_tiles, slide, origins, size, scale, pool, cache)
            if reason is None:
                cache.keep()
    if reason is None:
        return images, {}
    images, bad = [], {}  # find the damaged tiles, one at a time
    for i, (x, y) in enumerate(origins):
        tile, reason = read_one_checked(slide, x, y, size, scale)
        images.append(tile)
        if reason:
            bad[i] = reason
    return images, bad
