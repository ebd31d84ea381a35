"""Deterministic perturbations of labelled images, for measuring robustness to other labs and scanners.

    python -m train.evaluate --split val --perturb hed=0.2,scale=0.8,blur=1.0,jpeg=40

``hed``: stain jitter in HED optical density (see :func:`train.data.robust.hed_jitter`), drawn per image from a
seeded generator. ``scale``: the image is resized by this factor before prediction (a slide whose real resolution is
off the model mpp), and predictions are mapped back to the original pixels before matching. ``blur``: Gaussian sigma
in pixels. ``jpeg``: JPEG quality (0 = off). The same seed gives the same perturbed images for every model.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from muse_fast.errors import ConfigError

from .data.robust import gaussian_blur, hed_jitter, jpeg, rescale


@dataclass(frozen=True)
class Perturbation:
    hed: float = 0.0
    scale: float = 1.0
    blur: float = 0.0
    jpeg: int = 0
    seed: int = 2025

    @property
    def active(self) -> bool:
        return (self.hed, self.scale, self.blur, self.jpeg) != (0.0, 1.0, 0.0, 0)

    def describe(self) -> str:
        return ",".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self) if f.name != "seed")


def parse_perturbation(text: str) -> Perturbation:
    """``"hed=0.2,scale=0.8"`` -> :class:`Perturbation`; unknown or malformed keys are one-line errors."""
    if not text:
        return Perturbation()
    kinds = {f.name: f.type for f in fields(Perturbation)}
    values: dict = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        if key not in kinds or not value:
            raise ConfigError(f"bad --perturb item '{item}'; use key=value with keys {', '.join(kinds)}")
        try:
            values[key] = int(value) if kinds[key] in (int, "int") else float(value)
        except ValueError:
            raise ConfigError(f"bad --perturb value '{item}': not a number") from None
    p = Perturbation(**values)
    if p.scale <= 0 or p.hed < 0 or p.blur < 0 or not 0 <= p.jpeg <= 100:
        raise ConfigError(f"--perturb out of range ({p.describe()}): scale > 0, hed >= 0, blur >= 0, jpeg in 0..100")
    return p


def perturb_image(image: np.ndarray, p: Perturbation, index: int) -> np.ndarray:
    """The perturbed (and rescaled) copy of a uint8 ``[H, W, 3]`` image; ``index`` seeds its stain draw."""
    out, _ = rescale(image, np.zeros((0, 2), np.float32), p.scale)
    if p.hed or p.blur:
        x = torch.from_numpy(np.array(out)).permute(2, 0, 1)[None].float()
        x = hed_jitter(x, torch.Generator().manual_seed(p.seed + index), p.hed)
        x = gaussian_blur(x, p.blur)
        out = x[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()
    return jpeg(out, p.jpeg) if p.jpeg else out


def to_original_pixels(xy: np.ndarray, p: Perturbation) -> np.ndarray:
    """Map predictions on the rescaled image back to the original image's pixels (pixel-centred)."""
    return (xy + 0.5) / p.scale - 0.5 if p.scale != 1 else xy
