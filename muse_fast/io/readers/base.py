"""The ``SlideReader`` protocol shared by every backend, and helpers they all use."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from ..metadata import Resolution

BACKGROUND = 255  # value of pixels outside the slide (white glass)


class SlideReader(Protocol):
    """A pyramidal slide or plain image. All coordinates are level-0 pixels."""

    path: Path
    backend: str
    level_dimensions: list[tuple[int, int]]  # (width, height) per level
    level_downsamples: list[float]
    resolution: Resolution | None  # what the backend's library reports (x and y), if anything
    mpp: float | None  # resolved level-0 microns per pixel (set by open_slide); None when unknown

    def read_region(self, x: int, y: int, width: int, height: int, level: int = 0) -> np.ndarray:
        """RGB ``uint8 [height, width, 3]`` at ``level``, origin (x, y) in level 0; outside the slide is white."""
        ...

    def close(self) -> None: ...


def read_padded(
    read_inside: Callable[[int, int, int, int, int], np.ndarray],
    level_dims: tuple[int, int],
    downsample: float,
    x: int,
    y: int,
    width: int,
    height: int,
    level: int,
) -> np.ndarray:
    """Read the in-slide part of a region through ``read_inside`` and pad the rest with white.

    ``read_inside(x0, y0, w, h, level)`` takes a level-0 origin and a size in ``level`` pixels that lies inside.
    """
    out = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
    lx, ly = x / downsample, y / downsample  # origin in level pixels
    c0, r0 = max(0, int(np.ceil(-lx))) if lx < 0 else 0, max(0, int(np.ceil(-ly))) if ly < 0 else 0
    c1 = min(width, int(np.floor(level_dims[0] - lx)))
    r1 = min(height, int(np.floor(level_dims[1] - ly)))
    if c1 <= c0 or r1 <= r0:
        return out
    x0, y0 = int(round(x + c0 * downsample)), int(round(y + r0 * downsample))
    out[r0:r1, c0:c1] = as_rgb_uint8(read_inside(x0, y0, c1 - c0, r1 - r0, level))
    return out


def as_rgb_uint8(region: np.ndarray) -> np.ndarray:
    """8-bit RGB from 8- or 16-bit samples (16-bit scaled, not wrapped) with 1 or 3 channels."""
    if region.ndim == 2:
        region = region[..., None]
    if region.dtype == np.uint16:
        region = ((region.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif region.dtype != np.uint8:
        raise ValueError(f"unsupported sample type {region.dtype}; convert the image to 8-bit RGB")
    return np.broadcast_to(region[..., :3], (*region.shape[:2], 3)) if region.shape[-1] == 1 else region[..., :3]


def rgba_to_rgb(region: np.ndarray) -> np.ndarray:
    """Composite RGBA over white (OpenSlide returns transparent pixels outside scanned areas)."""
    if region.shape[-1] == 3:
        return region
    rgb = region[..., :3].astype(np.float32)
    alpha = region[..., 3:4].astype(np.float32) / 255.0
    return (rgb * alpha + BACKGROUND * (1 - alpha)).round().astype(np.uint8)
