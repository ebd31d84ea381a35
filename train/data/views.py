"""MUSE multi-scale views of one ROI (method.md 4.2-4.5): MPP sampler, overlapping MPP-based crops, H&E-aware
augmentation with coordinates transformed exactly, and nuclei matched across views by identity."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from .augment import flip_points, rot90_points
from .rois import Roi


@dataclass(frozen=True)
class ViewConfig:
    size: int = 224  # output side of every view (pixels)
    mpp_min: float = 0.25  # MPP sampler range (log-uniform, method.md 4.2), teacher and student drawn separately;
    mpp_max: float = 1.0  # never finer than the ROI's own pixels, never coarser than its field allows
    margin: float = 4.0  # nuclei closer than this to a view's edge are not used
    max_matched: int = 128  # cap on matched nuclei per view pair


@dataclass
class View:
    image: np.ndarray  # uint8 [size, size, 3]
    xy: np.ndarray  # float32 [N, 2] positions of the ROI's nuclei in this view (x, y)
    visible: np.ndarray  # bool [N] nucleus inside the view (with margin)
    mpp: float


def sample_mpp(rng: np.random.Generator, cfg: ViewConfig, roi_mpp: float, roi_size: int) -> float:
    """Log-uniform in [mpp_min, mpp_max], floored at the ROI's resolution (no views made by upsampling) and capped
    so the view fits in the ROI."""
    hi = min(cfg.mpp_max, roi_size * roi_mpp / cfg.size)
    lo = min(max(cfg.mpp_min, roi_mpp), hi)
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def crop_view(
    roi: Roi,
    roi_mpp: float,
    origin: tuple[float, float],
    mpp: float,
    cfg: ViewConfig,
    rng: np.random.Generator,
    augment: bool = True,
) -> View:
    """Crop ``size * mpp / roi_mpp`` ROI pixels at ``origin``, resize to ``size``, then flip/rotate (coordinates too).

    Pixel-index convention (pixel ``i`` spans [i, i+1) and sits at coordinate ``i``): a nucleus at ROI position
    ``c`` lands at ``(c + 0.5 - origin) / s - 0.5`` with ``s = mpp / roi_mpp`` ROI pixels per view pixel, which is
    exactly where PIL's resampling of the box puts that pixel's centre.
    """
    side = cfg.size * mpp / roi_mpp
    x0, y0 = origin
    box = (x0, y0, x0 + side, y0 + side)
    image = np.asarray(Image.fromarray(roi.image).resize((cfg.size, cfg.size), Image.BILINEAR, box=box))
    scale = mpp / roi_mpp
    xy = (roi.xy + np.float32(0.5) - np.array([x0, y0], np.float32)) / np.float32(scale) - np.float32(0.5)
    if augment:
        k = int(rng.integers(0, 4))
        image, xy = np.rot90(image, k), rot90_points(xy, k, cfg.size)
        if rng.random() < 0.5:
            image, xy = image[:, ::-1], flip_points(xy, cfg.size)
    m = cfg.margin
    visible = (xy[:, 0] >= m) & (xy[:, 0] < cfg.size - m) & (xy[:, 1] >= m) & (xy[:, 1] < cfg.size - m)
    return View(np.ascontiguousarray(image), xy.astype(np.float32), visible, mpp)


def view_pair(roi: Roi, roi_mpp: float, cfg: ViewConfig, rng: np.random.Generator) -> tuple[View, View, np.ndarray]:
    """Teacher-scale and student-scale views that overlap (the student's centre lies in the teacher's crop), and
    the indices of nuclei visible in both (at most ``max_matched``, chosen at random)."""
    s = roi.image.shape[0]
    mpp_t, mpp_s = sample_mpp(rng, cfg, roi_mpp, s), sample_mpp(rng, cfg, roi_mpp, s)
    side_t, side_s = cfg.size * mpp_t / roi_mpp, cfg.size * mpp_s / roi_mpp
    tx, ty = rng.uniform(0, s - side_t, size=2)
    cx, cy = rng.uniform([tx, ty], [tx + side_t, ty + side_t])
    sx = float(np.clip(cx - side_s / 2, 0, s - side_s))
    sy = float(np.clip(cy - side_s / 2, 0, s - side_s))
    a = crop_view(roi, roi_mpp, (float(tx), float(ty)), mpp_t, cfg, rng)
    b = crop_view(roi, roi_mpp, (sx, sy), mpp_s, cfg, rng)
    matched = np.flatnonzero(a.visible & b.visible)
    if len(matched) > cfg.max_matched:
        matched = np.sort(rng.choice(matched, cfg.max_matched, replace=False))
    return a, b, matched
