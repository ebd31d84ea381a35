"""Tissue detection on a low-resolution view of the slide: keeps faint and thin tissue, rejects glass, ink and debris.

The view is read at ``mask_mpp`` um/px (8 by default). The method was chosen by measurement (docs/results.md, "Tissue
detection"):

1. White balance. The glass colour is the median of the brightest 5% of pixels, when that is bright and nearly grey.
   The view is divided by it, so tinted glass reads as white.
2. Stain. A pixel is stained when its chroma (brightest minus darkest channel, 0..255) is at least ``min_chroma``.
   The floor is fixed. An Otsu threshold computed over tissue-dominated views splits pink eosin from pale haematoxylin
   and drops the pale half. Glass, grey dust and black scanner borders are neutral, so they have no chroma at any
   brightness.
3. Ink. Blue, cyan and green pixels are not tissue: hues ``pen_hue`` in degrees (H&E lies between 240 and 350).
   Very dark pixels (every channel below ``black_level``: black marker, borders) are not tissue either, and neither is a
   ``dark_guard_um`` rim around them, where dark ink blends with glass into a purple that looks like tissue.
4. Clean-up. A 3x3 closing fills small gaps, holes are filled, and components under ``min_area_um2`` are dropped
   (specks). Finally the mask grows by ``margin_um``, so the glass-blended edges of thin strands lie inside it. A tile
   is kept when it touches the mask, so this margin costs little.
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
    min_chroma: float = 12.0  # max - min channel (0..255, after white balance) of stained pixels
    black_level: int = 60  # darker than this in every channel: ink, border or debris, not tissue
    dark_guard_um: float = 8.0  # pixels this close to dark ones are not tissue (ink edges blended with glass)
    pen_hue: tuple[float, float] = (70.0, 235.0)  # hues (degrees) of green, cyan and blue ink
    glass_level: int = 200  # the glass reference must be brighter than this in every channel...
    glass_max_saturation: float = 0.12  # ...and at most this saturated, else white (255) is the reference
    min_area_um2: float = 500.0  # smaller components are dropped (about 22 x 22 um)
    margin_um: float = 16.0  # the mask grows by this much


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


def glass_colour(rgb: np.ndarray, cfg: TissueConfig = TissueConfig()) -> np.ndarray:
    """Per-channel glass colour: the median of the brightest 5% of pixels, or white when those are not glass-like."""
    x = rgb.reshape(-1, 3)
    x = x[:: max(1, len(x) // 1_000_000)].astype(np.float32)  # a million pixels are plenty
    brightness = x.sum(1)
    ref = np.median(x[brightness >= np.percentile(brightness, 95)], axis=0)
    if ref.min() > cfg.glass_level and (ref.max() - ref.min()) / ref.max() <= cfg.glass_max_saturation:
        return ref
    return np.full(3, 255.0, np.float32)


def hue_degrees(rgb: np.ndarray) -> np.ndarray:
    """HSV hue in [0, 360) of float RGB pixels [..., 3] (0 for grey)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    hi, lo = rgb.max(-1), rgb.min(-1)
    c = np.maximum(hi - lo, 1e-6)
    h = np.where(hi == r, ((g - b) / c) % 6, np.where(hi == g, (b - r) / c + 2, (r - g) / c + 4))
    return h * 60


def _px(um: float, um_per_px: float) -> int:
    return int(round(um / um_per_px))


def tissue_from_rgb(rgb: np.ndarray, um_per_px: float, cfg: TissueConfig = TissueConfig()) -> np.ndarray:
    """Boolean tissue mask of a low-resolution RGB view (``um_per_px`` um per pixel)."""
    rgb = rgb[..., :3]
    dark = np.maximum(np.maximum(rgb[..., 0], rgb[..., 1]), rgb[..., 2]) < cfg.black_level
    if _px(cfg.dark_guard_um, um_per_px) and dark.any():
        dark = ndimage.binary_dilation(dark, np.ones((3, 3)), iterations=_px(cfg.dark_guard_um, um_per_px))
    x = np.minimum(rgb.astype(np.float32) * (255.0 / glass_colour(rgb, cfg)), 255.0)  # glass reads as white
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    chroma = np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)
    mask = (chroma >= cfg.min_chroma) & ~dark
    hue = hue_degrees(x[mask])  # only where stained: ink is stained too
    mask[mask] = (hue <= cfg.pen_hue[0]) | (hue >= cfg.pen_hue[1])
    mask = ndimage.binary_closing(np.pad(mask, 1, mode="edge"), np.ones((3, 3)))[1:-1, 1:-1]
    mask = ndimage.binary_fill_holes(mask)
    labels, n = ndimage.label(mask)
    if n:
        sizes = np.bincount(labels.ravel())[1:] * um_per_px**2
        mask = np.isin(labels, 1 + np.flatnonzero(sizes >= cfg.min_area_um2))
    if _px(cfg.margin_um, um_per_px) and mask.any():
        mask = ndimage.binary_dilation(mask, np.ones((3, 3)), iterations=_px(cfg.margin_um, um_per_px))
    return mask


def detect_tissue(slide: SlideReader, mpp: float, cfg: TissueConfig = TissueConfig()) -> TissueMask:
    """Read a low-resolution view (the coarsest level fine enough, resized to ``mask_mpp``) and segment tissue."""
    from .resample import read_thumbnail

    target = max(cfg.mask_mpp / mpp, 1.0)  # level-0 pixels per mask pixel
    view = read_thumbnail(slide, target)
    downsample = slide.level_dimensions[0][0] / view.shape[1]
    return TissueMask(tissue_from_rgb(view, downsample * mpp, cfg), downsample)
