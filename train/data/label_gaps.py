"""Likely nuclei without a label: where a training set's dot labels are incomplete.

BRCA-M2C's labels miss some nuclei (results.md, "BRCA-M2C's dot labels are not complete everywhere"). Trained on
them as they are, the centre loss teaches the network that an unlabelled nucleus is background, which is one way to
learn to miss nuclei. :func:`unlabelled_nuclei` finds points that look like nuclei but lie far from every label; the
fine-tune (``train.finetune --ignore-unlabelled``) then leaves the cells around them out of the loss's negatives
(:func:`train.targets.ignore_mask`): they are neither taught as nuclei nor as background.

Sources: ``hema`` (the label-free haematoxylin detector, :mod:`.hema_nuclei`) and ``shipped`` (the default weights'
nuclei at their own threshold, which learned from these labels but still find nuclei the labels lack).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy.spatial import cKDTree

from muse_fast.errors import ConfigError

from .hema_nuclei import detect_haematoxylin_nuclei

SOURCES = ("hema", "shipped")


def parse_sources(text: str) -> tuple[str, ...]:
    """``"hema,shipped"`` -> the sources, refused with the valid names when one is unknown; ``""`` -> none."""
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in names if s not in SOURCES]
    if unknown:
        raise ConfigError(
            f"--ignore-unlabelled: unknown source {', '.join(unknown)}; choose from {', '.join(SOURCES)} "
            "(comma-separated), or '' for none"
        )
    return names


def shipped_engine(flip_tta: bool = False):
    """The default weights as a torch fp32 engine on the CPU (flips averaged with ``flip_tta``); (engine, metadata).

    Loaded under a forked torch RNG: building the model draws from it, and a training run that loads these weights
    before building its own model must start from the same initial weights as one that does not."""
    from muse_fast.model.weights import load_weights
    from muse_fast.runtime.engines import TorchEngine
    from muse_fast.runtime.tta import FlipTTAEngine

    with torch.random.fork_rng(devices=[]):
        model, meta = load_weights(None)
    engine = TorchEngine(model, "cpu", "fp32")
    return (FlipTTAEngine(engine) if flip_tta else engine), meta


def shipped_detector(mpp: float) -> Callable[[np.ndarray], np.ndarray]:
    """The default weights as ``image -> (x, y) [N, 2]`` for images at ``mpp`` (which must be the weights' mpp)."""
    from muse_fast.post.decode import DecodeConfig
    from muse_fast.runtime.predict import predict_image

    engine, meta = shipped_engine()
    if abs(meta.mpp - mpp) > 1e-6:
        raise ConfigError(f"the default weights run at {meta.mpp} um/px, the training images are at {mpp}")
    return lambda image: predict_image(engine, image, meta.tile_size, 32, DecodeConfig()).xy.astype(np.float32)


def unlabelled_nuclei(
    image: np.ndarray,
    labelled_xy: np.ndarray,
    mpp: float,
    sources: tuple[str, ...],
    min_distance_um: float = 6.0,
    detector: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Points ``(x, y) [N, 2]`` float32 that a source calls a nucleus and that lie more than ``min_distance_um`` from
    every labelled point. ``detector`` runs the ``shipped`` source (see :func:`shipped_detector`)."""
    found = []
    if "hema" in sources:
        found.append(detect_haematoxylin_nuclei(image, mpp))
    if "shipped" in sources:
        if detector is None:
            raise ValueError("the 'shipped' source needs its detector")
        found.append(detector(image))
    points = np.concatenate(found) if found else np.zeros((0, 2), np.float32)
    if not len(points) or not len(labelled_xy):
        return points.astype(np.float32)
    distance, _ = cKDTree(labelled_xy).query(points)
    return points[distance > min_distance_um / mpp].astype(np.float32)
