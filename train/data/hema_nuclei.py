"""A label-free nucleus detector: peaks of the smoothed haematoxylin optical density (colour deconvolution).

Nothing here was learned from labels, so its positions can feed NuLo pretraining without leaking a labelled data
set into the backbone. Sizes are in um, so it runs on any image at its own resolution.

``threshold = max(floor_od, rel * 99th percentile of the smoothed map)``: relative, so pale and dark slides work
alike, with an absolute floor so that a tile with no nuclei (fat, glass) does not call its noise nuclei.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .stress import to_hed


@dataclass(frozen=True)
class HemaConfig:
    sigma_um: float = 1.5  # Gaussian smoothing of the haematoxylin map (about a nucleus radius / 2)
    min_distance_um: float = 2.5  # two nuclei closer than this are one peak
    rel: float = 0.5  # of the map's 99th percentile
    floor_od: float = 0.5  # haematoxylin optical density (natural log) below which nothing is a nucleus


def haematoxylin_map(image: np.ndarray, mpp: float, sigma_um: float) -> np.ndarray:
    """Haematoxylin optical density of a uint8 RGB image, clipped at 0 and smoothed by ``sigma_um``."""
    return ndimage.gaussian_filter(np.clip(to_hed(image)[..., 0], 0, None), sigma_um / mpp)


def detect_haematoxylin_nuclei(image: np.ndarray, mpp: float, cfg: HemaConfig = HemaConfig()) -> np.ndarray:
    """Nucleus positions ``(x, y)`` float32 ``[N, 2]`` in ``image``'s pixels (``mpp`` um per pixel).

    A peak is a pixel equal to the maximum of its ``(2 d + 1)``-px window (``d`` = ``min_distance_um``) above the
    threshold; of equal neighbouring maxima (a plateau) the first in raster order is kept.
    """
    resp = haematoxylin_map(image, mpp, cfg.sigma_um)
    threshold = max(cfg.floor_od, cfg.rel * float(np.percentile(resp, 99)))
    d = max(1, int(round(cfg.min_distance_um / mpp)))
    peaks = (resp == ndimage.maximum_filter(resp, size=2 * d + 1, mode="nearest")) & (resp > threshold)
    ys, xs = np.nonzero(peaks)
    if len(xs) > 1:  # plateaus: keep the first of peaks closer than d
        keep = np.ones(len(xs), bool)
        order = np.lexsort((xs, ys))
        taken = np.zeros(resp.shape, bool)
        for i in order:
            y, x = ys[i], xs[i]
            if taken[max(y - d, 0) : y + d + 1, max(x - d, 0) : x + d + 1].any():
                keep[i] = False
            else:
                taken[y, x] = True
        xs, ys = xs[keep], ys[keep]
    return np.stack([xs, ys], 1).astype(np.float32)
