"""Numba point gather for the CPU runtime (forward and backward); the reference stays the oracle.

Corner indices and weights are computed once per point; then the loops run channel plane by channel plane (each
``H x W`` plane is contiguous and small), so the four corner loads of every point hit cache. The backward pass
gives each plane to one thread, so accumulation needs no atomics. The njit functions are in ``cpu_jit.py`` (cached
on disk, compiled once per machine), imported on the first call.
"""

from __future__ import annotations

import numpy as np
import torch

# Below this many (image, channel, point) triples the planes run on the calling thread: the decode of a pipeline
# batch (16 tiles x 192 channels x ~100 points) takes a few ms serially, while waking a thread team can cost a
# scheduler time slice (~10 ms) on a loaded machine. Training batches (64 x 384 x 150) run in parallel.
PARALLEL_MIN_WORK = 1 << 20


def _kernel(name: str, work: int):
    """``cpu_jit.<name>``, or its ``_serial`` twin below ``PARALLEL_MIN_WORK`` triples; numba is imported here."""
    from . import cpu_jit

    return getattr(cpu_jit, name if work >= PARALLEL_MIN_WORK else f"{name}_serial")


def _counts(xy: torch.Tensor, counts: torch.Tensor | None) -> np.ndarray:
    if counts is None:
        return np.full(xy.shape[0], xy.shape[1], np.int64)
    # clamped to K like the reference's mask: a larger count must never index past the point arrays
    return np.clip(counts.detach().cpu().numpy().astype(np.int64), 0, xy.shape[1])


def _point_corners(xy: torch.Tensor, counts: np.ndarray, hw: tuple[int, int], input_hw: tuple[int, int]):
    from .cpu_jit import corners

    b, k = xy.shape[:2]
    idx = np.full((b, k, 4), -1, np.int64)
    wts = np.zeros((b, k, 4), np.float32)
    corners(
        xy.detach().float().contiguous().numpy(), counts, hw[0], hw[1], float(input_hw[0]), float(input_hw[1]), idx, wts
    )
    return idx, wts


class _NumbaGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, fmap, xy, input_hw, counts, out_dtype):
        b, c, h, w = fmap.shape
        work = b * c * xy.shape[1]
        n = _counts(xy, counts)
        idx, wts = _point_corners(xy, n, (h, w), input_hw)
        x = fmap.detach().float()
        if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            out = np.zeros((b, xy.shape[1], c), np.float32)  # channels-last (the network's output): no copy
            _kernel("forward_nhwc", work)(x.permute(0, 2, 3, 1).reshape(b, h * w, c).numpy(), idx, wts, n, out)
            result = torch.from_numpy(out)
        else:
            out = np.zeros((b, c, xy.shape[1]), np.float32)
            _kernel("forward", work)(x.contiguous().reshape(b, c, h * w).numpy(), idx, wts, n, out)
            result = torch.from_numpy(out).transpose(1, 2)
        ctx.meta = (tuple(fmap.shape), fmap.dtype, n, idx, wts)
        return result.to(out_dtype or fmap.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        (b, c, h, w), dtype, n, idx, wts = ctx.meta
        grad = np.zeros((b, c, h * w), np.float32)
        planes_grad_out = grad_out.detach().float().transpose(1, 2).contiguous().numpy()  # [B, C, K]
        _kernel("backward", b * c * idx.shape[1])(planes_grad_out, idx, wts, n, grad)
        return torch.from_numpy(grad).reshape(b, c, h, w).to(dtype), None, None, None, None


def gather_points(
    fmap: torch.Tensor,
    xy: torch.Tensor,
    input_hw: tuple[int, int],
    counts: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Numba version of :func:`kernels.point_gather.reference.gather_points`; differentiable in ``fmap``.

    Rows ``k >= counts[b]`` (peaks padding) are skipped and come out as zeros.
    """
    return _NumbaGather.apply(fmap, xy, (int(input_hw[0]), int(input_hw[1])), counts, out_dtype)
