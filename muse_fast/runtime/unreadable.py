"""Tiles whose image data could not be decoded: where they are, and the one-line error that names them."""

from __future__ import annotations

from ..errors import InputError
from ..io.tiling import Tile


def unreadable_regions(unreadable: dict[int, str], tiles: list[Tile], scale: float, size: int) -> list[list[int]]:
    """Level-0 boxes ``[x, y, width, height]`` of the unreadable tiles, in tile order."""
    side = round(size * scale)
    return [[round(tiles[i].x * scale), round(tiles[i].y * scale), side, side] for i in sorted(unreadable)]


def unreadable_error(name: str, unreadable: dict[int, str], tiles: list[Tile], scale: float, size: int) -> InputError:
    """The one-line error for a slide with damaged image data: how many tiles, where, why, and the two fixes."""
    boxes = unreadable_regions(unreadable, tiles, scale, size)
    where = "; ".join(f"{x},{y}" for x, y, _, _ in boxes[:3]) + (f" (+{len(boxes) - 3} more)" if len(boxes) > 3 else "")
    reason = unreadable[min(unreadable)]
    return InputError(
        f"{name}: {len(unreadable)} of {len(tiles)} tiles could not be decoded (damaged image data: {reason}) at "
        f"level-0 x,y {where}; re-copy or re-scan the slide, or pass --skip-unreadable to process the rest "
        f"(finished batches are kept)"
    )
