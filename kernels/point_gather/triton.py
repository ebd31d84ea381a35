"""Triton point gather (forward and backward) on the peaks layout: ``[B, K, 2]`` points with per-image counts.

Each program handles ``BLOCK_K`` points x ``BLOCK_C`` channels of one image: it computes the bilinear corners once
per point (official ``align_corners=True`` mapping), loads the four corners as 2-D masked gathers, accumulates in
fp32 and stores in the feature map's dtype. The backward pass scatters with fp32 atomics into a zeroed buffer.
The map is read through its strides (NCHW or the engines' channels-last), never copied. Point blocks sit on grid
axis 0 and images on axis 1 (``kernels/grid.py``).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..grid import gather_grids

CL = torch.channels_last


@triton.jit
def _corner_setup(xy_ptr, counts_ptr, b, k_offs, K, H, W, in_h, in_w):
    n = tl.load(counts_ptr + b)
    kmask = (k_offs < K) & (k_offs < n)
    x = tl.load(xy_ptr + (b * K + k_offs) * 2, mask=kmask, other=0.0).to(tl.float32)
    y = tl.load(xy_ptr + (b * K + k_offs) * 2 + 1, mask=kmask, other=0.0).to(tl.float32)
    fx = x * (W - 1) / in_w
    fy = y * (H - 1) / in_h
    x0f = tl.floor(fx)
    y0f = tl.floor(fy)
    ax = fx - x0f
    ay = fy - y0f
    return kmask, x0f.to(tl.int32), y0f.to(tl.int32), ax, ay


@triton.jit
def _corner(dy: tl.constexpr, dx: tl.constexpr, x0, y0, ax, ay, kmask, H, W, s_h, s_w):
    """Element offset (through the map's strides), bilinear weight and in-map mask of corner (dy, dx) of every point."""
    yy = y0 + dy
    xx = x0 + dx
    wgt = (ay if dy == 1 else 1.0 - ay) * (ax if dx == 1 else 1.0 - ax)
    inside = kmask & (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
    return yy.to(tl.int64) * s_h + xx.to(tl.int64) * s_w, wgt, inside


@triton.jit
def _gather_fwd(
    fmap_ptr,
    xy_ptr,
    counts_ptr,
    out_ptr,
    K,
    C,
    H,
    W,
    s_b,
    s_c,
    s_h,
    s_w,
    in_h,
    in_w,
    BLOCK_K: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    k_offs = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)  # point blocks on axis 0
    b = tl.program_id(1).to(tl.int64)  # int64: B * C * H * W may pass 2**31 elements
    c_offs = (tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)).to(tl.int64)
    kmask, x0, y0, ax, ay = _corner_setup(xy_ptr, counts_ptr, b, k_offs, K, H, W, in_h, in_w)
    cmask = c_offs < C
    acc = tl.zeros((BLOCK_K, BLOCK_C), dtype=tl.float32)
    base = fmap_ptr + b * s_b + c_offs[None, :] * s_c
    for dy in tl.static_range(2):
        for dx in tl.static_range(2):
            offset, wgt, inside = _corner(dy, dx, x0, y0, ax, ay, kmask, H, W, s_h, s_w)
            m = inside[:, None] & cmask[None, :]
            v = tl.load(base + offset[:, None], mask=m, other=0.0).to(tl.float32)
            acc += wgt[:, None] * v
    out_offs = (b * K + k_offs)[:, None] * C + c_offs[None, :]
    tl.store(out_ptr + out_offs, acc.to(out_ptr.dtype.element_ty), mask=(k_offs < K)[:, None] & cmask[None, :])


@triton.jit
def _gather_bwd(
    grad_out_ptr,
    xy_ptr,
    counts_ptr,
    grad_fmap_ptr,
    K,
    C,
    H,
    W,
    s_b,
    s_c,
    s_h,
    s_w,
    in_h,
    in_w,
    BLOCK_K: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    k_offs = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)  # point blocks on axis 0
    b = tl.program_id(1).to(tl.int64)  # int64: B * C * H * W may pass 2**31 elements
    c_offs = (tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)).to(tl.int64)
    kmask, x0, y0, ax, ay = _corner_setup(xy_ptr, counts_ptr, b, k_offs, K, H, W, in_h, in_w)
    cmask = c_offs < C
    g = tl.load(
        grad_out_ptr + (b * K + k_offs)[:, None] * C + c_offs[None, :], mask=kmask[:, None] & cmask[None, :], other=0.0
    ).to(tl.float32)
    base = grad_fmap_ptr + b * s_b + c_offs[None, :] * s_c
    for dy in tl.static_range(2):
        for dx in tl.static_range(2):
            offset, wgt, inside = _corner(dy, dx, x0, y0, ax, ay, kmask, H, W, s_h, s_w)
            m = inside[:, None] & cmask[None, :]
            tl.atomic_add(base + offset[:, None], wgt[:, None] * g, mask=m)


def _launch(kernel, first, xy, counts, last, fmap, input_hw, block_k, block_c) -> None:
    """``kernel(first, xy, counts, last, ...)`` over every batch chunk, with ``fmap``'s shape and strides (``fmap`` is
    ``first``, the map read, in the forward pass and ``last``, the gradient written, in the backward pass)."""
    b, c, h, w = fmap.shape
    k = xy.shape[1]
    in_h, in_w = float(input_hw[0]), float(input_hw[1])
    for s, e, grid in gather_grids(b, k, c, block_k, block_c):
        args = (first[s:e], xy[s:e], counts[s:e], last[s:e], k, c, h, w, *fmap.stride(), in_h, in_w)
        kernel[grid](*args, BLOCK_K=block_k, BLOCK_C=block_c)


def _counts(xy: torch.Tensor, counts: torch.Tensor | None) -> torch.Tensor:
    if counts is None:
        return torch.full((xy.shape[0],), xy.shape[1], dtype=torch.int32, device=xy.device)
    return counts.to(device=xy.device, dtype=torch.int32).contiguous()


class _TritonGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, fmap, xy, input_hw, counts, block_k, block_c, out_dtype):
        xy32 = xy.detach().float().contiguous()
        n = _counts(xy, counts)
        dtype = out_dtype or fmap.dtype
        out = torch.empty(fmap.shape[0], xy.shape[1], fmap.shape[1], dtype=dtype, device=fmap.device)
        if out.numel() > 0:  # K = 0, B = 0 or C = 0: nothing to launch
            _launch(_gather_fwd, fmap, xy32, n, out, fmap, input_hw, block_k, block_c)
        ctx.save_for_backward(xy32, n)
        channels_last = fmap.dim() == 4 and not fmap.is_contiguous() and fmap.is_contiguous(memory_format=CL)
        ctx.meta = (tuple(fmap.shape), fmap.dtype, CL if channels_last else torch.contiguous_format)
        ctx.launch = (input_hw, block_k, block_c)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        xy32, n = ctx.saved_tensors
        shape, dtype, memory_format = ctx.meta
        grad = torch.empty(shape, dtype=torch.float32, device=grad_out.device, memory_format=memory_format).zero_()
        if grad_out.numel() > 0:
            _launch(_gather_bwd, grad_out.contiguous(), xy32, n, grad, grad, *ctx.launch)
        return grad.to(dtype), None, None, None, None, None, None


def gather_points(
    fmap: torch.Tensor,
    xy: torch.Tensor,
    input_hw: tuple[int, int],
    counts: torch.Tensor | None = None,
    block_k: int = 16,
    block_c: int = 64,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Triton version of :func:`kernels.point_gather.reference.gather_points`; differentiable in ``fmap``."""
    return _TritonGather.apply(fmap, xy, (int(input_hw[0]), int(input_hw[1])), counts, block_k, block_c, out_dtype)
