"""Reading a region at a target resolution: level choice and resampling in one place."""

from __future__ import annotations

import numpy as np
from PIL import Image

from .readers.base import SlideReader


def choose_level(downsamples: list[float], target_downsample: float) -> int:
    """The coarsest level that is still at least as fine as ``target_downsample`` (tolerance 1%)."""
    best = 0
    for i, d in enumerate(downsamples):
        if d <= target_downsample * 1.01 and d >= downsamples[best]:
            best = i
    return best


def read_at_scale(slide: SlideReader, x0: int, y0: int, size: int, scale: float) -> np.ndarray:
    """Read a ``size x size`` RGB tile whose level-0 footprint is ``size * scale`` pixels square at (x0, y0).

    ``scale`` is level-0 pixels per output pixel (model mpp / slide mpp). Shrinking is antialiased (PIL's
    bilinear filter widens its support when downscaling); an exact-size read is returned as is.
    """
    level = choose_level(slide.level_downsamples, scale)
    d = slide.level_downsamples[level]
    read = max(1, round(size * scale / d))
    region = slide.read_region(x0, y0, read, read, level)
    if read == size:
        return region
    return np.asarray(Image.fromarray(region).resize((size, size), Image.BILINEAR))
