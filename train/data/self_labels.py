"""Self-training labels: the shipped weights, with flip test-time augmentation, label unlabelled tissue.

Each ROI of a store (``train.detect_nuclei`` output; its own positions are not used) is brought to the detector's
resolution and run through the teacher at a low threshold. Its confident nuclei (score >= ``high``) become labelled
points, with the teacher's class where its class probability is at least ``class_confidence`` and no class
otherwise (the centre is still taught, the classifier is not); the uncertain ones (``low`` <= score < ``high``) are
left out of the centre loss's negatives (5 x 5 map cells around each, as for :mod:`.label_gaps`' points, but with no
distance to the taught ones required). ``train.finetune --self-train-rois``
mixes these images into training (``--self-train-share`` of the views).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from muse_fast.errors import ConfigError

from .brca import BRCA_MPP, CLASSES, LabelledImage
from .label_gaps import shipped_engine
from .robust import rescale
from .rois import RoiStore

NO_CLASS = -100  # a taught centre whose class is not taught (the classifier loss's padding id)


@dataclass(frozen=True)
class SelfLabelConfig:
    high: float = 0.5  # teacher score from which a nucleus is a label
    low: float = 0.15  # teacher score from which a nucleus is left out of the negatives
    class_confidence: float = 0.7  # teacher class probability from which its class is taught


def at_mpp(image: np.ndarray, mpp: float, target: float) -> np.ndarray:
    """``image`` (at ``mpp`` um/px) resampled to ``target`` um/px (:func:`.robust.rescale`); unchanged when they
    agree."""
    if abs(mpp - target) < 1e-6:
        return image
    return rescale(image, np.zeros((0, 2), np.float32), mpp / target)[0]


def teacher_engine():
    """The default weights in fp32 with horizontal and vertical flips averaged; (engine, weights metadata)."""
    return shipped_engine(flip_tta=True)


def self_labelled(store: RoiStore, cfg: SelfLabelConfig = SelfLabelConfig(), teacher=None) -> list[LabelledImage]:
    """Every ROI of ``store`` at the teacher's mpp with the teacher's labels (module doc)."""
    from muse_fast.post.decode import DecodeConfig
    from muse_fast.runtime.predict import predict_image

    engine, meta = teacher if teacher is not None else teacher_engine()
    if abs(meta.mpp - BRCA_MPP) > 1e-6 or tuple(meta.classes) != tuple(CLASSES):
        raise ConfigError(
            f"the teacher's weights ({meta.mpp} um/px, classes {', '.join(meta.classes)}) do not fit BRCA-M2C training "
            f"({BRCA_MPP} um/px, {', '.join(CLASSES)})"
        )
    if len(store) == 0:
        raise ConfigError("--self-train-rois: the ROI store holds no ROIs; build one with train.detect_nuclei")
    out = []
    for i in range(len(store)):
        roi = store[i]
        image = at_mpp(roi.image, roi.mpp or store.mpp, meta.mpp)
        nuclei = predict_image(engine, image, meta.tile_size, 32, DecodeConfig(threshold=cfg.low))
        sure = nuclei.score >= cfg.high
        labels = np.where(nuclei.class_prob >= cfg.class_confidence, nuclei.class_id, NO_CLASS)[sure]
        xy = nuclei.xy.astype(np.float32)
        out.append(LabelledImage(f"self#{i}", image, xy[sure], labels.astype(np.int64), xy[~sure]))
    return out
