"""Tissue detection on a low-resolution view of the slide, robust to white/black background and pen marks.

Tissue is stained: its colour saturation is high and it is neither white glass nor black (scanner borders,
debris). Pen ink is saturated too, so strongly blue or green pixels are removed first (H&E is pink/purple). The
saturation threshold is Otsu's over non-background pixels, floored at ``min_saturation``. Small holes are closed
and specks removed with morphology. Everything runs on a ~``mask_mpp`` um/px view (a few thousand pixels a side).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from .readers.base import SlideReader


@dataclass(frozen=True)
class TissueConfig:
    mask_mpp: float = 8.0  # resolution of the mask (um per pixel)
    min_saturation: float = 0.07  # lower bound on the Otsu saturation threshold
    white_level: int = 220  # brighter than this in every channel: glass
    black_level: int = 40  # darker than this in every channel: not tissue
    pen_margin: int = 25  # blue/green dominance (in 0..255) that marks pen ink
    min_area_um2: float = 5000.0  # smaller tissue components are dropped (about 70 x 70 um)


@dataclass(frozen=True)
class TissueMask:
    mask: np.ndarray  # bool [h, w]
    downsample: float  # level-0 pixels per mask pixel

    def fraction_in(self, x0: float, y0: float, x1: float, y1: float) -> float:
        """Fraction of tissue in a level-0 box."""
        d = self.downsample
        r0, r1 = int(np.floor(y0 / d)), int(np.ceil(y1 / d))
        c0, c1 = int(np.floor(x0 / d)), int(np.ceil(x1 / d))
        window = self.mask[max(r0, 0) : max(r1, 0), max(c0, 0) : max(c1, 0)]
        return float(window.mean()) if window.size else 0.0

    def to_png(self) -> Image.Image:
        return Image.fromarray(self.mask.astype(np.uint8) * 255)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of values in [0, 1]."""
    if values.size == 0:
        return 1.0
    hist, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres) / np.maximum(w0, 1)
    m1 = (np.sum(hist * centres) - np.cumsum(hist * centres)) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(centres[int(np.argmax(between))])


def tissue_from_rgb(rgb: np.ndarray, um_per_px: float, cfg: TissueConfig = TissueConfig()) -> np.ndarray:
    """Boolean tissue mask of a low-resolution RGB view."""
    x = rgb.astype(np.int16)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    hi, lo = x.max(-1), x.min(-1)
    saturation = (hi - lo) / np.maximum(hi, 1)
    background = (lo > cfg.white_level) | (hi < cfg.black_level)
    pen = ((b > r + cfg.pen_margin) & (b > g)) | ((g > r + cfg.pen_margin) & (g > b))
    candidates = ~background & ~pen
    threshold = max(cfg.min_saturation, otsu_threshold(saturation[candidates]) if candidates.any() else 1.0)
    mask = candidates & (saturation > threshold)
    mask = ndimage.binary_closing(mask, structure=np.ones((3, 3)), iterations=2)
    mask = ndimage.binary_fill_holes(mask)
    mask = ndimage.binary_opening(mask, structure=np.ones((2, 2)))
    labels, n = ndimage.label(mask)
    if n:
        sizes = ndimage.sum(mask, labels, index=np.arange(1, n + 1)) * um_per_px**2
        mask = np.isin(labels, 1 + np.flatnonzero(sizes >= cfg.min_area_um2))
    return mask


def detect_tissue(slide: SlideReader, mpp: float, cfg: TissueConfig = TissueConfig()) -> TissueMask:
    """Read a low-resolution view (the coarsest level fine enough, resized to ``mask_mpp``) and segment tissue."""
    from .resample import read_thumbnail

    target = max(cfg.mask_mpp / mpp, 1.0)  # level-0 pixels per mask pixel
    view = read_thumbnail(slide, target)
    return TissueMask(tissue_from_rgb(view, cfg.mask_mpp, cfg), slide.level_dimensions[0][0] / view.shape[1])
