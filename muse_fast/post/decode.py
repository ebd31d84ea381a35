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


class FlatNuclei(NamedTuple):
    """A batch's nuclei in one set of rows, tile after tile, each tile's in peak order."""

    counts: torch.Tensor  # [B] nuclei per tile
    xy: torch.Tensor  # [N, 2] float (x, y) in tile input pixels
    score: torch.Tensor  # [N] centre probability
    class_id: torch.Tensor  # [N] int64
    class_prob: torch.Tensor  # [N] probability of the chosen class
    feat: torch.Tensor  # [N, D] point features: exactly what the classifier was given


@torch.no_grad()
def decode_flat(
    centre: torch.Tensor,
    fmap: torch.Tensor,
    classifier: nn.Module,
    input_hw: tuple[int, int],
    stride: int,
    cfg: DecodeConfig,
) -> FlatNuclei:
    """Decode ``centre [B,3,h,w]`` (logit, dx, dy) and ``fmap [B,D,h,w]`` into the batch's nuclei as flat rows."""
    heat = torch.sigmoid(centre[:, 0].float())
    peaks = find_peaks(heat, cfg.threshold, cfg.min_distance, cfg.max_points)
    b = peaks.scores.shape[0]
    k = int(peaks.counts.max()) if b else 0  # only the filled part of the compacted layout is decoded
    counts = peaks.counts.to(centre.device)
    valid = torch.arange(k, device=centre.device)[None, :] < counts[:, None]
    xy = positions(peaks.yx[:, :k].to(centre.device), centre[:, 1:3], stride)
    feats = gather_points(fmap, xy, input_hw, peaks.counts, out_dtype=torch.float32)[valid]  # a bf16 map's, unrounded
    probs = torch.softmax(classifier(feats).float(), dim=-1)  # padding rows are never classified
    class_prob, class_id = probs.max(dim=-1)
    score = peaks.scores[:, :k].to(centre.device)[valid].float()
    return FlatNuclei(counts, xy[valid], score, class_id, class_prob, feats)


def decode_batch(
    centre: torch.Tensor,
    fmap: torch.Tensor,
    classifier: nn.Module,
    input_hw: tuple[int, int],
    stride: int,
    cfg: DecodeConfig,
) -> list[TileNuclei]:
    """Decode ``centre [B,3,h,w]`` (logit, dx, dy) and ``fmap [B,D,h,w]`` into nuclei for each tile."""
    flat = decode_flat(centre, fmap, classifier, input_hw, stride, cfg)
    sizes = flat.counts.tolist()
    parts = (torch.split(a, sizes) for a in (flat.xy, flat.score, flat.class_id, flat.class_prob, flat.feat))
    return [TileNuclei(*arrays) for arrays in zip(*parts)]
