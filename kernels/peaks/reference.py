"""Plain-PyTorch peak finding (local-maximum NMS) with point compaction: the oracle for every other implementation.

Semantics follow scikit-image ``peak_local_max(min_distance=r, threshold_abs=t, exclude_border=b, p_norm=inf)``:

- a pixel is a candidate when it is strictly above ``threshold`` and equal to the maximum of its
  ``(2r+1) x (2r+1)`` window (pixels outside the map are ignored, like ``mode='nearest'``);
- a constant map has no peak;
- tie rule: among equal values inside one window, only the first in raster (row-major) order survives, i.e. a
  candidate is dropped when an equal value lies in its window at an earlier raster position. This is the one
  place we differ from ``peak_local_max``, whose tie handling is inconsistent: with ``min_distance=1`` it keeps every
  pixel of a plateau, and for ``r > 1`` it keeps equal peaks exactly ``r`` apart (its spacing test is strict).
  Without exact ties the two agree point for point (tested);
- peaks closer than ``exclude_border`` pixels to the edge are dropped (0 = keep border peaks);
- per image, peaks are ordered by score (descending, ties in raster order) and the first ``max_points`` kept;
  ``counts`` holds the number kept and ``overflow`` the number dropped by the cap.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .types import Peaks, empty_peaks


def find_peaks(
    heatmap: torch.Tensor, threshold: float, min_distance: int = 1, max_points: int = 1024, exclude_border: int = 0
) -> Peaks:
    """Peaks of ``heatmap [B, H, W]``; see the module docstring for the exact semantics."""
    b, h, w = heatmap.shape
    r = int(min_distance)
    x = heatmap.float()
    is_peak = local_max_mask(x, r) & (x > threshold)
    flat = x.reshape(b, h * w)
    constant = flat.amax(1) == flat.amin(1)
    is_peak &= ~constant[:, None, None]
    if exclude_border > 0:
        e = int(exclude_border)
        border = torch.ones(h, w, dtype=torch.bool, device=x.device)
        border[e : h - e, e : w - e] = False
        is_peak &= ~border
    out = empty_peaks(b, max_points, heatmap.device, heatmap.dtype)
    for i in range(b):
        idx = torch.nonzero(is_peak[i].reshape(-1)).squeeze(1)  # raster order
        scores = flat[i, idx]
        order = torch.sort(scores, descending=True, stable=True).indices
        idx, scores = idx[order], scores[order]
        n = min(len(idx), max_points)
        out.counts[i] = n
        out.overflow[i] = len(idx) - n
        out.yx[i, :n, 0] = (idx[:n] // w).to(out.yx.dtype)
        out.yx[i, :n, 1] = (idx[:n] % w).to(out.yx.dtype)
        out.scores[i, :n] = scores[:n].to(out.scores.dtype)
    return out


def local_max_mask(x: torch.Tensor, r: int) -> torch.Tensor:
    """``[B, H, W]`` bool: equal to the window maximum and no equal value earlier in raster order inside the window."""
    k = 2 * r + 1
    win_max = F.max_pool2d(x[:, None], k, stride=1, padding=r)[:, 0]
    mask = x == win_max
    padded = F.pad(x, (r, r, r, r), value=float("-inf"))
    h, w = x.shape[-2:]
    for dy in range(-r, 1):
        for dx in range(-r, r + 1):
            if dy == 0 and dx >= 0:
                break
            shifted = padded[:, r + dy : r + dy + h, r + dx : r + dx + w]
            mask &= shifted != x
    return mask
