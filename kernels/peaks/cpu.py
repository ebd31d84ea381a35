"""Numba peak finding for the CPU runtime; same semantics as ``reference.py`` (the oracle), images in parallel."""

from __future__ import annotations

import numpy as np
import torch

from .types import Peaks, empty_peaks


def _build():
    import numba

    @numba.njit(cache=True)
    def _one_image(img, threshold, r, exclude_border, max_points, out_yx, out_scores):
        """Peaks of one image into ``out_yx [K, 2]`` / ``out_scores [K]``; returns (kept, total)."""
        h, w = img.shape
        lo, hi = img.min(), img.max()
        cand_idx = np.empty(h * w, np.int64)
        n = 0
        if hi > lo:
            for yy in range(exclude_border, h - exclude_border):
                for xx in range(exclude_border, w - exclude_border):
                    v = img[yy, xx]
                    if not v > threshold:
                        continue
                    ok = True
                    for dy in range(-r, r + 1):
                        ny = yy + dy
                        if ny < 0 or ny >= h:
                            continue
                        for dx in range(-r, r + 1):
                            nx = xx + dx
                            if nx < 0 or nx >= w or (dy == 0 and dx == 0):
                                continue
                            nv = img[ny, nx]
                            if nv > v or (nv == v and (dy < 0 or (dy == 0 and dx < 0))):
                                ok = False
                        if not ok:
                            break
                    if ok:
                        cand_idx[n] = yy * w + xx
                        n += 1
        scores = np.empty(n, img.dtype)
        for k in range(n):
            scores[k] = img[cand_idx[k] // w, cand_idx[k] % w]
        order = np.argsort(-scores, kind="mergesort")  # stable: ties stay in raster order
        kept = min(n, max_points)
        for k in range(kept):
            idx = cand_idx[order[k]]
            out_yx[k, 0] = idx // w
            out_yx[k, 1] = idx % w
            out_scores[k] = scores[order[k]]
        return kept, n

    @numba.njit(cache=True, parallel=True)
    def _peaks(x, threshold, r, exclude_border, max_points, out_yx, out_scores, counts, overflow):
        for i in numba.prange(x.shape[0]):
            kept, total = _one_image(x[i], threshold, r, exclude_border, max_points, out_yx[i], out_scores[i])
            counts[i] = kept
            overflow[i] = total - kept

    return _peaks


_KERNEL = None


def find_peaks(
    heatmap: torch.Tensor, threshold: float, min_distance: int = 1, max_points: int = 1024, exclude_border: int = 0
) -> Peaks:
    """Numba implementation of :func:`kernels.peaks.reference.find_peaks` (CPU tensors)."""
    global _KERNEL
    if _KERNEL is None:
        _KERNEL = _build()
    x = heatmap.detach().float().contiguous().numpy()
    out = empty_peaks(x.shape[0], max_points, heatmap.device, heatmap.dtype)
    scores = np.empty((x.shape[0], max_points), np.float32)
    scores[:] = out.scores.float().numpy()
    _KERNEL(
        x,
        np.float32(threshold),
        int(min_distance),
        int(exclude_border),
        int(max_points),
        out.yx.numpy(),
        scores,
        out.counts.numpy(),
        out.overflow.numpy(),
    )
    out.scores.copy_(torch.from_numpy(scores).to(out.scores.dtype))
    return out
