"""The njit functions behind ``cpu.py``, at module level so that ``cache=True`` takes: they compile once per
machine and every later process loads them from numba's cache (a closure built per process never hits the cache).

Imported only by ``cpu.py``, on the first call, so importing the package does not need numba. The functions live
in this one file: numba invalidates the cache by the file's timestamp, so a kernel that inlines a helper can never
be loaded stale. ``peaks`` runs the images in parallel, ``peaks_serial`` on the calling thread (``cpu.py`` picks).
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True)
def one_image(img, threshold, r, exclude_border, max_points, out_yx, out_scores):
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


@numba.njit(cache=True)
def _image(i, x, threshold, r, exclude_border, max_points, out_yx, out_scores, counts, overflow):
    """Image ``i`` of the batch into its rows of the outputs."""
    kept, total = one_image(x[i], threshold, r, exclude_border, max_points, out_yx[i], out_scores[i])
    counts[i] = kept
    overflow[i] = total - kept


@numba.njit(cache=True, parallel=True)
def peaks(x, threshold, r, exclude_border, max_points, out_yx, out_scores, counts, overflow):
    """All images of ``x [B, H, W]`` in parallel; fills the compacted outputs, ``counts`` and ``overflow``."""
    for i in numba.prange(x.shape[0]):
        _image(i, x, threshold, r, exclude_border, max_points, out_yx, out_scores, counts, overflow)


@numba.njit(cache=True)
def peaks_serial(x, threshold, r, exclude_border, max_points, out_yx, out_scores, counts, overflow):
    """:func:`peaks` on the calling thread, for small batches: no thread team to wake up and wait for."""
    for i in range(x.shape[0]):
        _image(i, x, threshold, r, exclude_border, max_points, out_yx, out_scores, counts, overflow)


DISPATCHERS = (peaks, peaks_serial, _image, one_image)  # for tests and tools that read ``dispatcher.stats``
