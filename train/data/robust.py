"""Robustness augmentations: HED stain jitter, Gaussian blur, scale jitter around the model mpp, JPEG artefacts.

Other labs and scanners change the stain mix, the focus, the effective resolution and the compression. Each
function here simulates one of these, on a batch ``[B, 3, H, W]`` float in 0..255 (stain, blur, JPEG) or on one
uint8 image with its points (scale). The same functions build the perturbed evaluation in ``train.evaluate``.
"""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .augment import random_crop

# Ruifrok & Johnston stain vectors (rows: haematoxylin, eosin, DAB) in optical density, as in scikit-image.
RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
HED_FROM_RGB = torch.linalg.inv(RGB_FROM_HED)


def hed_jitter(batch: torch.Tensor, generator: torch.Generator, sigma: float) -> torch.Tensor:
    """Per image and stain, ``hed * U(1 - sigma, 1 + sigma) + U(-sigma, sigma) / 4`` in optical density (Tellez)."""
    if sigma <= 0:
        return batch
    b = batch.shape[0]
    od = -torch.log((batch.clamp(0, 255) + 1.0) / 256.0).permute(0, 2, 3, 1)  # [B, H, W, 3]
    hed = od @ HED_FROM_RGB.to(batch.device)
    scale = 1 + sigma * (2 * torch.rand(b, 1, 1, 3, generator=generator) - 1)
    shift = 0.25 * sigma * (2 * torch.rand(b, 1, 1, 3, generator=generator) - 1)
    hed = hed * scale.to(batch.device) + shift.to(batch.device)
    rgb = 256.0 * torch.exp(-(hed @ RGB_FROM_HED.to(batch.device))) - 1.0
    return rgb.permute(0, 3, 1, 2).clamp(0, 255)


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``[B, 3, H, W]`` (reflect padding); ``sigma`` in pixels, 0 is the identity."""
    if sigma <= 0:
        return image
    radius = max(1, int(np.ceil(2.5 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=image.device)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    k = (k / k.sum()).to(image.dtype)
    c = image.shape[1]
    out = F.pad(image, (radius, radius, 0, 0), mode="reflect")
    out = F.conv2d(out, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    out = F.pad(out, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(out, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def random_blur(batch: torch.Tensor, generator: torch.Generator, p: float, max_sigma: float = 1.2) -> torch.Tensor:
    """Blur each image with probability ``p`` at ``sigma ~ U(0.3, max_sigma)`` px (out of focus, other optics)."""
    if p <= 0:
        return batch
    draws = torch.rand(batch.shape[0], 2, generator=generator)
    out = batch.clone()
    for i, (u, s) in enumerate(draws.tolist()):
        if u < p:
            out[i : i + 1] = gaussian_blur(batch[i : i + 1], 0.3 + (max_sigma - 0.3) * s)
    return out


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """Round-trip a uint8 ``[H, W, 3]`` image through JPEG at ``quality`` (4:2:0 chroma, as most scanners)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=int(quality))
    return np.array(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def random_jpeg(batch: torch.Tensor, rng: np.random.Generator, p: float, qualities=(30, 90)) -> torch.Tensor:
    """JPEG artefacts on each image with probability ``p``, at a quality drawn from ``qualities``."""
    if p <= 0:
        return batch
    out = batch.clone()
    for i in range(batch.shape[0]):
        if rng.random() < p:
            im = batch[i].permute(1, 2, 0).round().clamp(0, 255).byte().cpu().numpy()
            q = int(rng.integers(qualities[0], qualities[1] + 1))
            out[i] = torch.from_numpy(jpeg(im, q)).permute(2, 0, 1).to(batch)
    return out


def rescale(image: np.ndarray, xy: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Resize ``image`` by ``factor`` (bilinear; area-like when shrinking) and move pixel-centred points with it."""
    if factor == 1:
        return image, xy
    h, w = image.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    out = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR, reducing_gap=None))
    sx, sy = size[0] / w, size[1] / h
    return out, (xy + 0.5) * np.array([sx, sy], np.float32) - 0.5


def random_scaled_crop(image: np.ndarray, xy: np.ndarray, size: int, rng: np.random.Generator, jitter: float):
    """A ``size`` view at a random scale in ``[1 - jitter, 1 + jitter]`` (crop ``size / scale``, resize to ``size``).

    Simulates slides whose true resolution is off the model mpp by up to ``jitter`` (e.g. 0.2 = +-20%). Returns
    (crop, xy, keep) as :func:`random_crop`.
    """
    scale = 1.0 + jitter * (2 * rng.random() - 1) if jitter > 0 else 1.0
    src = max(8, round(size / scale))
    crop, shifted, keep = random_crop(image, xy, src, rng)
    if src == size:
        return crop, shifted, keep
    out = np.asarray(Image.fromarray(crop).resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None))
    return out, (shifted + 0.5) * (size / src) - 0.5, keep
