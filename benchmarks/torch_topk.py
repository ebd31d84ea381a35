"""The fair plain-PyTorch baseline for the peak kernels: max-pool NMS and one batched top-k, with no per-image loop
and no device -> host sync (the reference in ``kernels/peaks/reference.py`` loops over images with a ``nonzero()``
each: it is the oracle, not a speed baseline).

Same semantics as the reference (``local_max_mask``, threshold, constant maps, border exclusion, score order with
ties in raster order), except which of several equal scores straddling the ``max_points`` cap is kept.
"""

from __future__ import annotations

import torch

from muse_fast.kernels.peaks.reference import local_max_mask
from muse_fast.kernels.peaks.types import Peaks, empty_peaks


def find_peaks_topk(
    heatmap: torch.Tensor, threshold: float, min_distance: int = 1, max_points: int = 1024, exclude_border: int = 0
) -> Peaks:
    """Peaks of ``heatmap [B, H, W]`` in the reference's layout, computed for the whole batch at once."""
    b, h, w = heatmap.shape
    x = heatmap.float()
    flat = x.reshape(b, h * w)
    keep = local_max_mask(x, int(min_distance)) & (x > threshold)
    keep &= (flat.amax(1) != flat.amin(1))[:, None, None]  # a constant map has no peak
    if exclude_border > 0:
        e = int(exclude_border)
        inner = torch.zeros(h, w, dtype=torch.bool, device=x.device)
        inner[e : h - e, e : w - e] = True
        keep &= inner
    keep = keep.reshape(b, h * w)
    n = min(max_points, h * w)
    scores, idx = torch.where(keep, flat, float("-inf")).topk(n, dim=1)  # descending; ties in any order
    order = torch.sort(idx, dim=1, stable=True).indices  # ties in raster order: sort by index, then stably by score
    idx, scores = idx.gather(1, order), scores.gather(1, order)
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    idx, scores = idx.gather(1, order), scores.gather(1, order)
    total = keep.sum(1, dtype=torch.int32)
    kept = total.clamp(max=max_points)
    out = empty_peaks(b, max_points, heatmap.device, heatmap.dtype)
    slot = torch.arange(n, device=x.device)[None, :] < kept[:, None]
    out.yx[:, :n, 0] = torch.where(slot, idx // w, out.yx[:, :n, 0].long()).to(torch.int32)
    out.yx[:, :n, 1] = torch.where(slot, idx % w, out.yx[:, :n, 1].long()).to(torch.int32)
    out.scores[:, :n] = torch.where(slot, scores, out.scores[:, :n].float()).to(out.scores.dtype)
    out.counts.copy_(kept)
    out.overflow.copy_(total - kept)
    return out
