"""Tissue-variety augmentation: pale, spindle-shaped and packed nuclei, drawn at random for training views.

A detector trained on one breast cohort misses nuclei with open (pale) chromatin, elongated nuclei in stroma and
muscle, and nuclei packed in glands. :func:`variety_view` makes training views that contain such nuclei, each kind
with probability ``p``:

- **pale**: haematoxylin optical density lowered by a Gaussian-weighted factor around a random subset of the
  labelled nuclei (strength 0.2-0.7, sigma 1.5-2.5 um): no disc edge, unlike the ``pale`` stress test.
- **stretched**: an anisotropic stretch (1.1-1.6, area kept) and shear (+-0.3) of a larger crop, centre-cropped;
  the later random rot90/flip turns the stretch axis.
- **packed**: labelled nuclei copied next to labelled nuclei 4.5-6.5 um apart (20-60% more nuclei), labels added.

These are the stress suite's kinds of change (:mod:`train.data.stress`), so a model trained with them no longer
has the suite's pale, elongated and crowded tests as held-out measures; NuCLS and other tissue stay held out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from muse_fast.errors import ConfigError

from .augment import random_crop
from .robust import random_scaled_crop
from .stress import crowd, distance_to_points, elongate, from_hed, to_hed

KINDS = ("pale", "stretch", "packed")


@dataclass(frozen=True)
class VarietyConfig:
    """Probabilities of each kind per view (0 = never) and the model's um/px for sizes in um."""

    pale_p: float = 0.0
    stretch_p: float = 0.0
    packed_p: float = 0.0
    mpp: float = 0.5

    @classmethod
    def uniform(cls, p: float, mpp: float = 0.5) -> VarietyConfig:
        """Every kind with the same probability ``p``."""
        return cls(pale_p=p, stretch_p=p, packed_p=p, mpp=mpp)

    @classmethod
    def of_kinds(cls, p: float, kinds: str, mpp: float = 0.5) -> VarietyConfig:
        """The ``kinds`` named (comma-separated, of :data:`KINDS`) with probability ``p``, the others never."""
        names = [k.strip() for k in kinds.split(",") if k.strip()]
        unknown = sorted(set(names) - set(KINDS))
        if unknown or not names:
            raise ConfigError(
                f"--variety-kinds {kinds!r}: {'unknown ' + ', '.join(unknown) if unknown else 'none named'}; "
                f"name one or more of {','.join(KINDS)}"
            )
        return cls(**{f"{k}_p": (p if k in names else 0.0) for k in KINDS}, mpp=mpp)

    @property
    def active(self) -> bool:
        return max(self.pale_p, self.stretch_p, self.packed_p) > 0


def pale_some_nuclei(image: np.ndarray, xy: np.ndarray, rng: np.random.Generator, mpp: float) -> np.ndarray:
    """Haematoxylin lowered around a random 30-100% of the nuclei at ``xy``, by a smooth (Gaussian) weight."""
    if len(xy) == 0:
        return image
    chosen = xy[rng.random(len(xy)) < rng.uniform(0.3, 1.0)]
    if len(chosen) == 0:
        return image
    sigma = rng.uniform(1.5, 2.5) / mpp
    dist = distance_to_points(image.shape[:2], chosen)
    weight = np.exp(-0.5 * (dist / sigma) ** 2)
    hed = to_hed(image)
    hed[..., [0, 2]] *= 1.0 - rng.uniform(0.2, 0.7) * weight[..., None]
    return from_hed(hed)


def stretched_crop(
    image: np.ndarray, xy: np.ndarray, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A ``size`` view of ``image`` stretched 1.1-1.6x (area kept) and sheared +-0.3; returns (crop, xy, keep)."""
    stretch, shear = rng.uniform(1.1, 1.6), rng.uniform(-0.3, 0.3)
    src = int(np.ceil(size * stretch * (1 + abs(shear))))
    crop, shifted, keep = random_crop(image, xy, src, rng)
    out, moved, inside = elongate(crop, shifted[keep], stretch, shear)
    h, w = out.shape[:2]
    y0, x0 = max((h - size) // 2, 0), max((w - size) // 2, 0)
    view = np.full((size, size, 3), 255, np.uint8)
    part = out[y0 : y0 + size, x0 : x0 + size]
    view[: part.shape[0], : part.shape[1]] = part
    moved = moved - np.array([x0, y0], np.float32)
    in_view = (moved[:, 0] >= 0) & (moved[:, 0] <= size - 1) & (moved[:, 1] >= 0) & (moved[:, 1] <= size - 1)
    kept = np.flatnonzero(keep)[inside][in_view]
    mask = np.zeros(len(xy), bool)
    mask[kept] = True
    return view, moved[in_view].astype(np.float32), mask


def variety_view(
    image: np.ndarray,
    xy: np.ndarray,
    labels: np.ndarray,
    size: int,
    rng: np.random.Generator,
    cfg: VarietyConfig,
    scale_jitter: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One training view (``size`` square, uint8) with its points and labels, each variety drawn with its ``p``.

    Without a stretch the view is :func:`random_scaled_crop` (``scale_jitter``); the stretch replaces that scale.
    """
    if rng.random() < cfg.stretch_p:
        crop, pts, keep = stretched_crop(image, xy, size, rng)
    else:
        crop, pts, keep = random_scaled_crop(image, xy, size, rng, scale_jitter)
        pts = pts[keep]
    labs = labels[keep]
    if rng.random() < cfg.packed_p and len(pts):
        crop, pts, labs = crowd(crop, pts, labs, cfg.mpp, rng.uniform(0.2, 0.6), rng, spacing_um=rng.uniform(4.5, 5.4))
    if rng.random() < cfg.pale_p:
        crop = pale_some_nuclei(crop, pts, rng, cfg.mpp)
    return crop, pts.astype(np.float32), labs
