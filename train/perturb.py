"""Deterministic perturbations of labelled images, for measuring robustness to other labs and scanners.

    python -m train.evaluate --split val --perturb hed=0.2,scale=0.8,blur=1.0,jpeg=40

``hed``: stain jitter in HED optical density (see :func:`train.data.robust.hed_jitter`), drawn per image from a
seeded generator. ``scale``: the image is resized by this factor before prediction (a slide whose real resolution is
off the model mpp), and predictions are mapped back to the original pixels before matching. ``blur``: Gaussian sigma
in pixels. ``jpeg``: JPEG quality (0 = off). ``lowres``: the image resized down by this factor and back up to its
own size, as a slide scanned at ``lowres`` times the model's um/px (2 = a 10x scan for a 20x model) looks once
``infer`` resamples it to the model's resolution. The same seed gives the same perturbed images for every model.

Stress tests (:mod:`train.data.stress`) change the labels too and are applied first, on the original pixels:
``pale`` (haematoxylin removed inside nuclei, 0..1), ``stretch`` and ``shear`` (elongation), ``crowd`` (pasted
nuclei per labelled nucleus) and ``frozen`` (frozen-section artefacts, 1 = typical); predictions are then matched
against the stressed labels.

    python -m train.evaluate --split val --stress-suite
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import torch
from PIL import Image

from muse_fast.errors import ConfigError

from .data.brca import LabelledImage
from .data.robust import gaussian_blur, hed_jitter, jpeg, rescale
from .data.stress import crowd, elongate, frozen, pale_nuclei

LEGACY_KEYS = ("hed", "scale", "blur", "jpeg")  # always described, as before the stress tests


@dataclass(frozen=True)
class Perturbation:
    hed: float = 0.0
    scale: float = 1.0
    blur: float = 0.0
    jpeg: int = 0
    pale: float = 0.0
    stretch: float = 1.0
    shear: float = 0.0
    crowd: float = 0.0
    frozen: float = 0.0
    lowres: float = 1.0
    seed: int = 2025

    @property
    def active(self) -> bool:
        """Whether anything is changed: any setting but the seed away from its default."""
        return replace(self, seed=Perturbation.seed) != Perturbation()

    @property
    def stressed(self) -> bool:
        """Whether a stress test that moves or adds labels (or marks nuclei) is on."""
        return (self.pale, self.stretch, self.shear, self.crowd, self.frozen) != (0.0, 1.0, 0.0, 0.0, 0.0)

    def describe(self) -> str:
        default = Perturbation()
        return ",".join(
            f"{f.name}={getattr(self, f.name)}"
            for f in fields(self)
            if f.name in LEGACY_KEYS or (f.name != "seed" and getattr(self, f.name) != getattr(default, f.name))
        )


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
    if p.scale <= 0 or p.hed < 0 or p.blur < 0 or not 0 <= p.jpeg <= 100 or p.lowres < 1:
        raise ConfigError(
            f"--perturb out of range ({p.describe()}): scale > 0, hed >= 0, blur >= 0, jpeg in 0..100, lowres >= 1"
        )
    if not 0 <= p.pale <= 1 or p.stretch <= 0 or p.crowd < 0 or p.frozen < 0 or abs(p.shear) > 2:
        raise ConfigError(
            f"--perturb out of range ({p.describe()}): pale in 0..1, stretch > 0, |shear| <= 2, crowd >= 0, frozen >= 0"
        )
    return p


def stress_labelled(im: LabelledImage, p: Perturbation, index: int, mpp: float) -> LabelledImage:
    """``im`` under the stress tests of ``p`` (pale, elongation, crowding, frozen), with its labels moved or added.

    ``mpp`` is the image's resolution (sizes in the stress tests are in um); ``index`` seeds the draws.
    """
    if not p.stressed:
        return im
    rng = np.random.default_rng([p.seed, index])
    image, xy, labels = im.image, im.xy, im.labels
    if p.crowd:
        image, xy, labels = crowd(image, xy, labels, mpp, p.crowd, rng)
    if p.pale:
        image = pale_nuclei(image, xy, mpp, p.pale)
    if p.stretch != 1 or p.shear:
        image, xy, keep = elongate(image, xy, p.stretch, p.shear)
        labels = labels[keep]
    if p.frozen:
        image = frozen(image, xy, mpp, p.frozen, rng)
    return LabelledImage(im.name, image, xy, labels)


def perturb_image(image: np.ndarray, p: Perturbation, index: int) -> np.ndarray:
    """The perturbed (and rescaled) copy of a uint8 ``[H, W, 3]`` image; ``index`` seeds its stain draw."""
    out = low_resolution(image, p.lowres)
    out, _ = rescale(out, np.zeros((0, 2), np.float32), p.scale)
    if p.hed or p.blur:
        x = torch.from_numpy(np.array(out)).permute(2, 0, 1)[None].float()
        x = hed_jitter(x, torch.Generator().manual_seed(p.seed + index), p.hed)
        x = gaussian_blur(x, p.blur)
        out = x[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()
    return jpeg(out, p.jpeg) if p.jpeg else out


def low_resolution(image: np.ndarray, factor: float) -> np.ndarray:
    """``image`` resized down by ``factor`` (area-like) and back up to its own size (bilinear); 1 is the identity."""
    if factor == 1:
        return image
    h, w = image.shape[:2]
    small = rescale(image, np.zeros((0, 2), np.float32), 1.0 / factor)[0]
    return np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR))


def to_original_pixels(xy: np.ndarray, p: Perturbation) -> np.ndarray:
    """Map predictions on the rescaled image back to the original image's pixels (pixel-centred)."""
    return (xy + 0.5) / p.scale - 0.5 if p.scale != 1 else xy
