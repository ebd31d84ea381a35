"""Large-field-of-view semi-supervised fine-tuning (the optional second reading of method.md section 5).

A mean teacher (EMA of the detector) labels unlabelled context: tiles cut from a ROI store (for example WSI tissue
around the labelled regions). The student learns the teacher's centre probabilities on those tiles (soft BCE) and,
at the teacher's confident nuclei, its classes (cross-entropy). The labelled loss is unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from muse_fast.kernels.point_gather import gather_points
from muse_fast.post.decode import DecodeConfig, decode_batch

from .data.augment import random_geometry
from .data.rois import Roi, RoiStore
from .data.views import ViewConfig, crop_view


def unlabelled_batch(store: RoiStore, size: int, mpp: float, batch: int, rng: np.random.Generator) -> torch.Tensor:
    """Random ``size``-px crops at ``mpp`` (the detector's resolution; ROIs stored finer are resampled), with
    flips/rotations, ``[B, 3, S, S]`` in 0..255. A ROI smaller than the crop is padded with white."""
    cfg = ViewConfig(size=size)
    tiles = []
    for i in rng.integers(0, len(store), batch):
        roi = store[int(i)]
        side = size * mpp / roi.mpp  # ROI pixels under one crop
        pad = max(0, int(np.ceil(side)) - roi.image.shape[0])
        image = np.pad(roi.image, ((0, pad), (0, pad), (0, 0)), constant_values=255) if pad else roi.image
        x, y = (float(rng.integers(0, int(max(d - side, 0)) + 1)) for d in image.shape[:2])  # whole ROI pixels
        view = crop_view(Roi(image, roi.xy, roi.mpp), roi.mpp, (x, y), mpp, cfg, rng, augment=False)
        tiles.append(random_geometry(view.image, np.zeros((0, 2), np.float32), rng)[0])
    return torch.from_numpy(np.stack(tiles)).permute(0, 3, 1, 2).float()


def pseudo_label_loss(student, teacher, images: torch.Tensor, threshold: float) -> tuple[torch.Tensor, dict]:
    """Soft centre targets everywhere plus class targets at the teacher's nuclei with class probability >= threshold."""
    with torch.no_grad():
        t_out = teacher(images)
        t_heat = torch.sigmoid(t_out.centre[:, 0])
        nuclei = decode_batch(t_out.centre, t_out.fmap, teacher.classifier, images.shape[-2:], 4, DecodeConfig())
    s_out = student(images)
    centre = F.binary_cross_entropy_with_logits(s_out.centre[:, 0], t_heat)
    confident = [(n.xy[n.class_prob >= threshold], n.class_id[n.class_prob >= threshold]) for n in nuclei]
    counts = torch.tensor([len(c[0]) for c in confident], dtype=torch.int32)
    cls = s_out.centre.sum() * 0
    if int(counts.sum()):
        xy = torch.zeros(len(confident), int(counts.max()), 2)
        for i, (p, _) in enumerate(confident):
            xy[i, : len(p)] = p
        feats = gather_points(s_out.fmap, xy.to(images.device), images.shape[-2:], counts)
        valid = torch.arange(xy.shape[1])[None, :] < counts[:, None]
        labels = torch.cat([c[1] for c in confident]).to(images.device)
        cls = F.cross_entropy(student.classifier(feats[valid.to(images.device)]), labels)
    return centre + cls, {"pseudo_centre": centre.item(), "pseudo_cls": cls.item(), "pseudo_n": int(counts.sum())}
