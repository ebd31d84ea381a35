"""Training targets for the centre head: Gaussian heatmap and sub-cell offsets at stride 4."""

from __future__ import annotations

import numpy as np


def centre_targets(xy: np.ndarray, size: int, stride: int = 4, sigma: float = 1.0, radius: int = 3):
    """Heatmap ``[h, w]`` (1 at each nucleus' cell), offsets ``[2, h, w]`` and positive mask ``[h, w]``.

    A nucleus at ``(x, y)`` lives in cell ``(floor(x/stride), floor(y/stride))`` with offset in [0, 1) per axis,
    matching :class:`muse_fast.model.heads.CentreHead`.
    """
    h = w = size // stride
    heat = np.zeros((h, w), np.float32)
    offset = np.zeros((2, h, w), np.float32)
    mask = np.zeros((h, w), bool)
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    blob = np.exp(-(xx**2 + yy**2) / (2 * sigma**2)).astype(np.float32)
    for x, y in xy / stride:
        cx, cy = int(np.floor(x)), int(np.floor(y))
        if not (0 <= cx < w and 0 <= cy < h):
            continue
        x0, x1, y0, y1 = max(cx - radius, 0), min(cx + radius + 1, w), max(cy - radius, 0), min(cy + radius + 1, h)
        patch = blob[y0 - cy + radius : y1 - cy + radius, x0 - cx + radius : x1 - cx + radius]
        np.maximum(heat[y0:y1, x0:x1], patch, out=heat[y0:y1, x0:x1])
        offset[:, cy, cx] = (x - cx, y - cy)
        mask[cy, cx] = True
    return heat, offset, mask


def ignore_mask(xy: np.ndarray, size: int, stride: int = 4, radius: int = 2) -> np.ndarray:
    """Cells ``[h, w]`` within ``radius`` cells (Chebyshev) of each point's cell: left out of the centre loss's
    negatives (:func:`train.losses.centre_focal.centre_focal_loss`'s ``ignore``)."""
    h = w = size // stride
    mask = np.zeros((h, w), bool)
    for x, y in xy / stride:
        cx, cy = int(np.floor(x)), int(np.floor(y))
        if not (0 <= cx < w and 0 <= cy < h):
            continue
        mask[max(cy - radius, 0) : cy + radius + 1, max(cx - radius, 0) : cx + radius + 1] = True
    return mask
