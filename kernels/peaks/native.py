"""Native peak finding (``csrc/``, loaded by ``kernels/native.py``): the CPU or CUDA library by the tensor's device.

Same semantics as ``reference.py``; the logic is the one the TensorRT plugin runs (``csrc/muse_post.h``).
"""

from __future__ import annotations

import torch

from .. import native
from .types import Peaks, empty_peaks


def find_peaks(
    heatmap: torch.Tensor, threshold: float, min_distance: int = 1, max_points: int = 1024, exclude_border: int = 0
) -> Peaks:
    """Native implementation of :func:`kernels.peaks.reference.find_peaks` (CPU or CUDA tensors)."""
    lib = native.library(heatmap.device.type)
    x = heatmap.detach().float().contiguous()
    b, h, w = x.shape
    out = empty_peaks(b, max_points, heatmap.device, heatmap.dtype)
    if b == 0 or h * w == 0:
        return out  # no pixels, no peaks; padding rows stay as allocated
    scores = out.scores if out.scores.dtype == torch.float32 else out.scores.float()
    args = [native.ptr(x), b, h, w, float(threshold), int(min_distance), max(int(exclude_border), 0)]
    args += [max(int(max_points), 0), native.ptr(out.yx), native.ptr(scores), native.ptr(out.counts)]
    args.append(native.ptr(out.overflow))
    if x.is_cuda:
        with torch.cuda.device(x.device):
            ws = native.workspace(lib, "muse_peaks_cuda_workspace", x.device, b, h, w)
            native.call(lib, "muse_peaks_cuda", *args, native.ptr(ws), native.stream_of(x))
    else:
        native.call(lib, "muse_peaks_cpu", *args)
    if scores is not out.scores:
        out.scores.copy_(scores)
    return out
