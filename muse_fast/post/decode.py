"""Dense outputs of a batch of tiles -> nuclei per tile: peaks, sub-pixel offsets, point features, classes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from muse_fast.kernels.nuclei_decode import positions
from muse_fast.kernels.peaks import find_peaks
from muse_fast.kernels.point_gather import gather_points


@dataclass(frozen=True)
class DecodeConfig:
    threshold: float = 0.3  # minimum centre probability of a nucleus
    min_distance: int = 1  # peak NMS radius, in stride-4 cells (1 -> 3x3 window)
    max_points: int = 2048  # cap per tile


class TileNuclei(NamedTuple):
    xy: torch.Tensor  # [N, 2] float (x, y) in tile input pixels
    score: torch.Tensor  # [N] centre probability
    class_id: torch.Tensor  # [N] int64
    class_prob: torch.Tensor  # [N] probability of the chosen class
    feat: torch.Tensor | None = None  # [N, D] point features: exactly what the classifier was given


@torch.no_grad()
def decode_batch(
    centre: torch.Tensor,
    fmap: torch.Tensor,
    classifier: nn.Module,
    input_hw: tuple[int, int],
    stride: int,
    cfg: DecodeConfig,
) -> list[TileNuclei]:
    """Decode ``centre [B,3,h,w]`` (logit, dx, dy) and ``fmap [B,D,h,w]`` into nuclei for each tile."""
    heat = torch.sigmoid(centre[:, 0].float())
    peaks = find_peaks(heat, cfg.threshold, cfg.min_distance, cfg.max_points)
    b = peaks.scores.shape[0]
    k = int(peaks.counts.max()) if b else 0  # only the filled part of the compacted layout is decoded
    valid = torch.arange(k, device=centre.device)[None, :] < peaks.counts[:, None].to(centre.device)
    xy = positions(peaks.yx[:, :k].to(centre.device), centre[:, 1:3], stride)
    feats = gather_points(fmap, xy, input_hw, peaks.counts, out_dtype=torch.float32)  # a bf16 map's, unrounded
    logits = classifier(feats[valid])  # padding rows are never classified
    probs = torch.softmax(logits.float(), dim=-1)
    class_prob = torch.zeros(b, k, device=centre.device)
    class_id = torch.zeros(b, k, dtype=torch.long, device=centre.device)
    class_prob[valid], class_id[valid] = probs.max(dim=-1)
    out = []
    for i in range(b):
        n = int(peaks.counts[i])
        out.append(TileNuclei(xy[i, :n], peaks.scores[i, :n].float(), class_id[i, :n], class_prob[i, :n], feats[i, :n]))
    return out
