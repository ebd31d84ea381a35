"""Numba point gather for the CPU runtime (forward and backward); the reference stays the oracle.

Corner indices and weights are computed once per point; then the loops run channel plane by channel plane (each
``H x W`` plane is contiguous and small), so the four corner loads of every point hit cache. The backward pass
gives each plane to one thread, so accumulation needs no atomics.
"""

from __future__ import annotations

import numpy as np
import torch

_KERNELS = None


def _build():
    import numba

    @numba.njit(cache=True, parallel=True)
    def corners(xy, counts, h, w, in_h, in_w, idx, wts):
        """Flat indices ``idx [B, K, 4]`` (-1 outside the map) and bilinear weights ``wts [B, K, 4]`` per point."""
        b, k = xy.shape[:2]
        for i in numba.prange(b):
            for p in range(counts[i]):
                fx = xy[i, p, 0] * (w - 1) / in_w
                fy = xy[i, p, 1] * (h - 1) / in_h
                x0, y0 = int(np.floor(fx)), int(np.floor(fy))
                ax, ay = fx - x0, fy - y0
                for j in range(4):
                    yy, xx = y0 + j // 2, x0 + j % 2
                    inside = 0 <= yy < h and 0 <= xx < w
                    idx[i, p, j] = yy * w + xx if inside else -1
                    wts[i, p, j] = (ay if j // 2 else 1.0 - ay) * (ax if j % 2 else 1.0 - ax)

    @numba.njit(cache=True, parallel=True)
    def forward(planes, idx, wts, counts, out):  # planes [B, C, H*W], out [B, C, K]
        b, c = planes.shape[:2]
        for q in numba.prange(b * c):
            i, ch = q // c, q % c
            for p in range(counts[i]):
                acc = 0.0
                for j in range(4):
                    if idx[i, p, j] >= 0:
                        acc += wts[i, p, j] * planes[i, ch, idx[i, p, j]]
                out[i, ch, p] = acc

    @numba.njit(cache=True, parallel=True)
    def backward(grad_out, idx, wts, counts, grad_planes):  # grad_out [B, C, K], grad_planes [B, C, H*W]
        b, c = grad_planes.shape[:2]
        for q in numba.prange(b * c):  # one thread per plane: no atomics needed
            i, ch = q // c, q % c
            for p in range(counts[i]):
                g = grad_out[i, ch, p]
                for j in range(4):
                    if idx[i, p, j] >= 0:
                        grad_planes[i, ch, idx[i, p, j]] += g * wts[i, p, j]

    return corners, forward, backward


def _kernels():
    global _KERNELS
    if _KERNELS is None:
        _KERNELS = _build()
    return _KERNELS


def _counts(xy: torch.Tensor, counts: torch.Tensor | None) -> np.ndarray:
    if counts is None:
        return np.full(xy.shape[0], xy.shape[1], np.int64)
    return counts.detach().cpu().numpy().astype(np.int64)


def _point_corners(xy: torch.Tensor, counts: np.ndarray, hw: tuple[int, int], input_hw: tuple[int, int]):
    corners, _, _ = _kernels()
    b, k = xy.shape[:2]
    idx = np.full((b, k, 4), -1, np.int64)
    wts = np.zeros((b, k, 4), np.float32)
    corners(
        xy.detach().float().contiguous().numpy(), counts, hw[0], hw[1], float(input_hw[0]), float(input_hw[1]), idx, wts
    )
    return idx, wts


class _NumbaGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, fmap, xy, input_hw, counts):
        _, forward, _ = _kernels()
        b, c, h, w = fmap.shape
        n = _counts(xy, counts)
        idx, wts = _point_corners(xy, n, (h, w), input_hw)
        out = np.zeros((b, c, xy.shape[1]), np.float32)
        forward(fmap.detach().float().contiguous().reshape(b, c, h * w).numpy(), idx, wts, n, out)
        ctx.meta = (tuple(fmap.shape), fmap.dtype, n, idx, wts)
        return torch.from_numpy(out).transpose(1, 2).to(fmap.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        _, _, backward = _kernels()
        (b, c, h, w), dtype, n, idx, wts = ctx.meta
        grad = np.zeros((b, c, h * w), np.float32)
        backward(grad_out.detach().float().transpose(1, 2).contiguous().numpy(), idx, wts, n, grad)
        return torch.from_numpy(grad).reshape(b, c, h, w).to(dtype), None, None, None


def gather_points(
    fmap: torch.Tensor, xy: torch.Tensor, input_hw: tuple[int, int], counts: torch.Tensor | None = None
) -> torch.Tensor:
    """Numba version of :func:`kernels.point_gather.reference.gather_points`; differentiable in ``fmap``.

    Rows ``k >= counts[b]`` (peaks padding) are skipped and come out as zeros.
    """
    return _NumbaGather.apply(fmap, xy, (int(input_hw[0]), int(input_hw[1])), counts)
