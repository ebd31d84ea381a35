"""Tile reads that notice damaged image data, whatever the backend.

Backends show a failed decode differently: OpenSlide raises (and must reopen), tiffslide raises on most damage,
cuCIM returns decoder garbage and prints to fd 2 (see :mod:`.native_output`). A batch is read the fast way first;
only when it raised or a decoder complained is it read again one tile at a time, to name the damaged tiles. Their
pixels are never passed on: the caller gets their indices and reasons.
"""

from __future__ import annotations

import numpy as np

from .native_output import active_log, decode_errors
from .readers.base import BACKGROUND, SlideReader
from .resample import read_at_scale, read_tiles


def _complaint(mark: int | None) -> str | None:
    log = active_log()
    if log is None or mark is None:
        return None
    errors = decode_errors(log.since(mark))
    return errors[-1] if errors else None  # the last line is the decoder's own message (cuCIM prefixes one)


def _mark() -> int | None:
    log = active_log()
    return log.offset() if log is not None else None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def read_one_checked(slide: SlideReader, x: int, y: int, size: int, scale: float) -> tuple[np.ndarray, str | None]:
    """One tile and, when its data could not be decoded, why (its pixels are then white)."""
    mark = _mark()
    try:
        tile = read_at_scale(slide, x, y, size, scale)
    except Exception as exc:  # noqa: BLE001 - every backend raises its own decoder errors
        return np.full((size, size, 3), BACKGROUND, np.uint8), _reason(exc)
    problem = _complaint(mark)
    if problem:
        return np.full((size, size, 3), BACKGROUND, np.uint8), problem
    return tile, None


def read_tiles_checked(
    slide: SlideReader, origins: list[tuple[int, int]], size: int, scale: float, pool
) -> tuple[list[np.ndarray], dict[int, str]]:
    """:func:`read_tiles`, plus ``{index in origins: reason}`` for the tiles whose data is damaged."""
    mark = _mark()
    try:
        images = read_tiles(slide, origins, size, scale, pool)
        if _complaint(mark) is None:
            return images, {}
    except Exception:  # noqa: BLE001 - find the damaged tiles below, one at a time
        pass
    images, bad = [], {}
    for i, (x, y) in enumerate(origins):
        tile, reason = read_one_checked(slide, x, y, size, scale)
        images.append(tile)
        if reason:
            bad[i] = reason
    return images, bad
