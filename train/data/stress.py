"""Stress tests that mimic the nuclei a detector trained on one tissue misses, built from labelled images.

- :func:`pale_nuclei`: haematoxylin scaled down inside a disc around each labelled nucleus (pale, open chromatin).
- :func:`elongate`: anisotropic scale and shear of the whole image, labels moved with it (spindle-like nuclei).
- :func:`crowd`: labelled nuclei copied and pasted next to others at gland-like spacing, labels added.
- :func:`frozen`: frozen-section-like artefacts: ice-crystal holes, haematoxylin bleed, a thicker section, blur.

Each works on one uint8 ``[H, W, 3]`` image with pixel-centred ``xy [N, 2]`` (x, y) labels and draws from a given
``numpy`` generator, so the same seed gives the same stressed images for every model. Sizes are in um (``mpp``).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from .robust import HED_FROM_RGB, RGB_FROM_HED, gaussian_blur

_HED_FROM_RGB = HED_FROM_RGB.numpy().astype(np.float64)
_RGB_FROM_HED = RGB_FROM_HED.numpy().astype(np.float64)


def to_hed(image: np.ndarray) -> np.ndarray:
    """uint8 RGB -> float64 ``[H, W, 3]`` haematoxylin, eosin, DAB optical densities (Ruifrok & Johnston)."""
    od = -np.log((image.astype(np.float64) + 1.0) / 256.0)
    return od @ _HED_FROM_RGB


def from_hed(hed: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_hed` (exact up to uint8 rounding)."""
    rgb = 256.0 * np.exp(-(hed @ _RGB_FROM_HED)) - 1.0
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def distance_to_points(shape: tuple[int, int], xy: np.ndarray) -> np.ndarray:
    """Distance in pixels from every pixel to the nearest point (``inf`` everywhere when there is none)."""
    seeds = np.ones(shape, bool)
    ij = np.round(xy[:, ::-1]).astype(int) if len(xy) else np.zeros((0, 2), int)
    ij = ij[(ij[:, 0] >= 0) & (ij[:, 0] < shape[0]) & (ij[:, 1] >= 0) & (ij[:, 1] < shape[1])]
    if len(ij) == 0:
        return np.full(shape, np.inf)
    seeds[ij[:, 0], ij[:, 1]] = False
    return ndimage.distance_transform_edt(seeds)


def disc_weights(dist: np.ndarray, radius: float, feather: float = 2.0) -> np.ndarray:
    """1 within ``radius`` px, falling linearly to 0 over ``feather`` px beyond it."""
    return np.clip((radius + feather - dist) / feather, 0.0, 1.0)


def pale_nuclei(image: np.ndarray, xy: np.ndarray, mpp: float, strength: float, radius_um: float = 4.0) -> np.ndarray:
    """Haematoxylin (and its DAB residual) optical density times ``1 - strength`` within ``radius_um`` of each
    labelled nucleus: the nucleus keeps its outline and texture but loses most of its stain."""
    if strength <= 0:
        return image
    w = disc_weights(distance_to_points(image.shape[:2], xy), radius_um / mpp)
    hed = to_hed(image)
    hed[..., [0, 2]] *= 1.0 - strength * w[..., None]  # DAB too: in H&E it is haematoxylin's residual
    return from_hed(hed)


def elongation_matrix(stretch: float, shear: float) -> np.ndarray:
    """``[[stretch, shear], [0, 1 / stretch]]``: x stretched, y compressed (area kept), then sheared along x."""
    return np.array([[stretch, shear], [0.0, 1.0 / stretch]])


def elongate(
    image: np.ndarray, xy: np.ndarray, stretch: float, shear: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The image under :func:`elongation_matrix` (bilinear, glass-white outside) and the labels moved with it.

    Returns ``(image, xy, keep)``: ``xy`` holds the kept labels' new positions, ``keep`` marks labels still inside.
    """
    h, w = image.shape[:2]
    a = elongation_matrix(stretch, shear)
    corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], np.float64) @ a.T  # continuous coords: pixel i spans [i, i+1)
    lo, hi = corners.min(0), corners.max(0)
    size = tuple(int(np.ceil(v)) for v in hi - lo)
    inv = np.linalg.inv(a)  # output u -> input inv @ (u + lo); PIL samples output pixel centres
    offset = inv @ lo
    data = (inv[0, 0], inv[0, 1], offset[0], inv[1, 0], inv[1, 1], offset[1])
    out = Image.fromarray(image).transform(
        size, Image.Transform.AFFINE, data, Image.Resampling.BILINEAR, fillcolor=(255, 255, 255)
    )
    moved = (xy.astype(np.float64) + 0.5) @ a.T - lo - 0.5
    keep = (moved[:, 0] >= 0) & (moved[:, 0] <= size[0] - 1) & (moved[:, 1] >= 0) & (moved[:, 1] <= size[1] - 1)
    return np.asarray(out), moved[keep].astype(np.float32), keep


def crowd(
    image: np.ndarray,
    xy: np.ndarray,
    labels: np.ndarray,
    mpp: float,
    amount: float,
    rng: np.random.Generator,
    spacing_um: float = 5.0,
    radius_um: float = 3.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paste ``round(amount * N)`` copies of labelled nuclei (discs of ``radius_um``) next to labelled nuclei.

    Each copy lands ``spacing_um`` to 1.2x that from a random labelled nucleus and no closer than 0.9x ``spacing_um``
    to any nucleus (labelled or pasted), so nuclei end up packed as in glands. Returns the image and the labels with
    the pasted nuclei appended (their source's class); a copy that finds no room after 30 draws is skipped.
    """
    n = int(round(amount * len(xy)))
    if n <= 0 or len(xy) == 0:
        return image, xy, labels
    h, w = image.shape[:2]
    r = int(np.ceil(radius_um / mpp))
    feather = 2.0
    yy, xx = np.mgrid[-r - 2 : r + 3, -r - 2 : r + 3]
    mask = disc_weights(np.hypot(xx, yy), r - feather, feather)[..., None]
    half = r + 2
    inside = (xy[:, 0] >= half) & (xy[:, 0] < w - half - 1) & (xy[:, 1] >= half) & (xy[:, 1] < h - half - 1)
    sources = np.flatnonzero(inside)
    if len(sources) == 0:
        return image, xy, labels
    out = image.astype(np.float64)
    pts, cls = [p for p in xy.astype(np.float64)], list(labels)
    spacing = spacing_um / mpp
    for _ in range(n):
        for _try in range(30):
            anchor = pts[int(rng.integers(len(xy)))]
            angle, dist = rng.uniform(0, 2 * np.pi), spacing * rng.uniform(1.0, 1.2)
            p = anchor + dist * np.array([np.cos(angle), np.sin(angle)])
            cx, cy = int(round(p[0])), int(round(p[1]))
            if not (half <= cx < w - half - 1 and half <= cy < h - half - 1):
                continue
            if np.min(np.hypot(*(np.array(pts) - [cx, cy]).T)) < 0.9 * spacing:
                continue
            s = int(sources[rng.integers(len(sources))])
            sx, sy = int(round(xy[s, 0])), int(round(xy[s, 1]))
            patch = image[sy - half : sy + half + 1, sx - half : sx + half + 1].astype(np.float64)
            region = out[cy - half : cy + half + 1, cx - half : cx + half + 1]
            out[cy - half : cy + half + 1, cx - half : cx + half + 1] = region * (1 - mask) + patch * mask
            pts.append(np.array([cx + (xy[s, 0] - sx), cy + (xy[s, 1] - sy)]))
            cls.append(labels[s])
            break
    return np.round(out).astype(np.uint8), np.array(pts, np.float32), np.array(cls, labels.dtype)


def frozen(image: np.ndarray, xy: np.ndarray, mpp: float, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Frozen-section-like artefacts at ``strength`` (1 = typical; 0 = none).

    A thicker section (all optical densities x ``1 + 0.3 s``), haematoxylin bleeding into its surroundings (mixed
    with itself blurred by 1.5 um, weight ``0.5 s``), ice-crystal holes (one per (20 um)^2 x ``s``, radius 1 to 3
    um, kept 3 um away from labelled nuclei so every label stays a visible nucleus) and a blur of ``0.5 s`` um.
    """
    if strength <= 0:
        return image
    h, w = image.shape[:2]
    hed = to_hed(image) * (1.0 + 0.3 * strength)
    mix = min(0.5 * strength, 1.0)
    hed[..., 0] = (1 - mix) * hed[..., 0] + mix * ndimage.gaussian_filter(hed[..., 0], 1.5 / mpp)
    rgb = from_hed(hed).astype(np.float64)
    holes = np.zeros((h, w))
    for _ in range(int(round(strength * h * w * mpp * mpp / 400.0))):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        ra, rb = rng.uniform(1.0, 3.0, size=2) / mpp
        theta = rng.uniform(0, np.pi)
        r = int(np.ceil(max(ra, rb))) + 1
        y0, y1, x0, x1 = max(int(cy) - r, 0), min(int(cy) + r + 1, h), max(int(cx) - r, 0), min(int(cx) + r + 1, w)
        dy, dx = np.mgrid[y0:y1, x0:x1] + 0.5 - np.array([cy, cx])[:, None, None]
        u, v = dx * np.cos(theta) + dy * np.sin(theta), -dx * np.sin(theta) + dy * np.cos(theta)
        hole = np.clip(3.0 * (1.0 - np.hypot(u / ra, v / rb)), 0, 1)  # 1 inside 2/3 of the ellipse, soft edge
        holes[y0:y1, x0:x1] = np.maximum(holes[y0:y1, x0:x1], hole)
    holes *= distance_to_points((h, w), xy) > 3.0 / mpp
    rgb = rgb * (1 - 0.9 * holes[..., None]) + 245.0 * 0.9 * holes[..., None]
    x = gaussian_blur(torch.from_numpy(rgb).permute(2, 0, 1)[None].float(), 0.5 * strength / mpp)
    return x[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()
