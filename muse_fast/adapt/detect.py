"""The base network on the windows: detected nuclei with their point features, matched to annotated points."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import torch

from ..post.decode import DecodeConfig
from ..runtime.engines import TorchEngine
from ..runtime.predict import Nuclei, predict_image
from ..train.metrics import hungarian_match
from .inputs import Window

MATCH_UM = 3.0  # an annotated point and a detected nucleus are one nucleus within 3 um (train.evaluate's radius)
OVERLAP = 32


@dataclass
class PointFeatures:
    """Point features of the detected nuclei matched to annotated points, with the annotated class."""

    feats: torch.Tensor  # float32 [N, D]
    labels: np.ndarray  # int64 [N]
    groups: np.ndarray  # int64 [N] index of the input each point comes from
    unmatched: int  # annotated points with no detected nucleus within MATCH_UM


def detect(model, window: Window, tile_size: int, decode: DecodeConfig = DecodeConfig(), batch: int = 16) -> Nuclei:
    """Nuclei of one window (its pixels), with point features, on the torch engine at fp32 (the reference)."""
    engine = TorchEngine(model, "cpu", "fp32")
    return predict_image(engine, window.image, tile_size, OVERLAP, decode, batch, features=True)


def matched_features(
    model, windows: list[Window], groups: list[str], tile_size: int, mpp: float, progress: bool = False
) -> PointFeatures:
    """Features of the detected nuclei nearest each annotated point (one-to-one, within :data:`MATCH_UM`)."""
    from tqdm import tqdm

    feats, labels, group_ids, unmatched = [], [], [], 0
    radius = MATCH_UM / mpp
    for win in tqdm(windows, desc="detecting", unit="area", disable=not progress, file=sys.stderr):
        if not len(win.xy):
            continue
        nuc = detect(model, win, tile_size)
        pairs = hungarian_match(win.xy, nuc.xy, radius)
        unmatched += len(win.xy) - len(pairs)
        if pairs:
            g, p = np.asarray(pairs).T
            feats.append(torch.from_numpy(nuc.feat[p]))
            labels.append(win.labels[g])
            group_ids.append(np.full(len(g), groups.index(win.group), np.int64))
    if not feats:
        empty = np.zeros(0, np.int64)
        return PointFeatures(torch.zeros(0, model.backbone.out_dim), empty, empty, unmatched)
    return PointFeatures(torch.cat(feats), np.concatenate(labels), np.concatenate(group_ids), unmatched)
