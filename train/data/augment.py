"""Random training views with coordinates transformed exactly: crop, rot90, flip, colour jitter."""

from __future__ import annotations

import numpy as np
import torch


def random_crop(image: np.ndarray, xy: np.ndarray, size: int, rng: np.random.Generator):
    """Random ``size`` square crop (white-padded if the image is smaller); returns (crop, xy, keep mask)."""
    h, w = image.shape[:2]
    x0 = int(rng.integers(0, max(w - size, 0) + 1))
    y0 = int(rng.integers(0, max(h - size, 0) + 1))
    crop = np.full((size, size, 3), 255, dtype=np.uint8)
    part = image[y0 : y0 + size, x0 : x0 + size]
    crop[: part.shape[0], : part.shape[1]] = part
    shifted = xy - np.array([x0, y0], dtype=xy.dtype)
    keep = (
        (shifted[:, 0] >= 0)
        & (shifted[:, 0] < min(size, w - x0))
        & (shifted[:, 1] >= 0)
        & (shifted[:, 1] < min(size, h - y0))
    )
    return crop, shifted, keep


def rot90_points(xy: np.ndarray, k: int, size: int) -> np.ndarray:
    """Pixel positions after ``np.rot90(image, k)`` of a ``size x size`` image (counter-clockwise)."""
    out = xy.copy()
    for _ in range(k % 4):
        out = np.stack([out[:, 1], size - 1 - out[:, 0]], axis=1)
    return out


def flip_points(xy: np.ndarray, size: int) -> np.ndarray:
    """Pixel positions after ``image[:, ::-1]`` (horizontal flip)."""
    return np.stack([size - 1 - xy[:, 0], xy[:, 1]], axis=1)


def random_geometry(image: np.ndarray, xy: np.ndarray, rng: np.random.Generator):
    size = image.shape[0]
    k = int(rng.integers(0, 4))
    image, xy = np.rot90(image, k), rot90_points(xy, k, size)
    if rng.random() < 0.5:
        image, xy = image[:, ::-1], flip_points(xy, size)
    return np.ascontiguousarray(image), xy


def colour_jitter(batch: torch.Tensor, generator: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """Per-image brightness, contrast, saturation and per-channel (stain-like) gains on ``[B,3,H,W]`` in 0..255."""
    if strength == 0:
        return batch
    b = batch.shape[0]

    def u(lo: float, hi: float) -> torch.Tensor:
        return (lo + (hi - lo) * torch.rand(b, 1, 1, 1, generator=generator)).to(batch.device)

    s = strength
    x = batch * u(1 - 0.15 * s, 1 + 0.15 * s)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * u(1 - 0.2 * s, 1 + 0.2 * s) + mean
    grey = x.mean(dim=1, keepdim=True)
    x = (x - grey) * u(1 - 0.25 * s, 1 + 0.25 * s) + grey
    gains = (1 + 0.06 * s * (2 * torch.rand(b, 3, 1, 1, generator=generator) - 1)).to(batch.device)
    return (x * gains).clamp(0, 255)
