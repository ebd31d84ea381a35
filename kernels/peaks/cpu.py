"""Numba peak finding for the CPU runtime; same semantics as ``reference.py`` (the oracle).

The njit functions are in ``cpu_jit.py`` (cached on disk, compiled once per machine), imported on the first call.
Large batches run their images in parallel, small ones on the calling thread.
"""

from __future__ import annotations

import numpy as np
import torch

from .types import Peaks, empty_peaks

# Below this many pixels per batch the images run on the calling thread: a batch of 16 tiles (16 x 56 x 56) takes
# ~0.2 ms serially, while waking a thread team can cost a scheduler time slice (~10 ms) on a loaded machine.
PARALLEL_MIN_PIXELS = 1 << 19


def find_peaks(
    heatmap: torch.Tensor, threshold: float, min_distance: int = 1, max_points: int = 1024, exclude_border: int = 0
) -> Peaks:
    """Numba implementation of :func:`kernels.peaks.reference.find_peaks` (CPU tensors)."""
    from . import cpu_jit  # numba is imported on first use only

    x = heatmap.detach().float().contiguous().numpy()
    kernel = cpu_jit.peaks if x.size >= PARALLEL_MIN_PIXELS else cpu_jit.peaks_serial
    out = empty_peaks(x.shape[0], max_points, heatmap.device, heatmap.dtype)
    if x.size == 0:
        return out  # no pixels, no peaks (as the Triton kernel); padding rows stay as allocated
    scores = np.empty((x.shape[0], max_points), np.float32)
    scores[:] = out.scores.float().numpy()
    kernel(
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
