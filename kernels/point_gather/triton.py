"""Triton point gather (forward and backward) on the peaks layout: ``[B, K, 2]`` points with per-image counts.

Each program handles ``BLOCK_K`` points x ``BLOCK_C`` channels of one image: it computes the bilinear corners once
per point (official ``align_corners=True`` mapping), loads the four corners as 2-D masked gathers, accumulates in
fp32 and stores in the feature map's dtype. The backward pass scatters with fp32 atomics into a zeroed buffer.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


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
def _corner(dy: tl.constexpr, dx: tl.constexpr, x0, y0, ax, ay, kmask, H, W):
    """Flat offset, bilinear weight and in-map mask of corner (dy, dx) of every point."""
    yy = y0 + dy
    xx = x0 + dx
    wgt = (ay if dy == 1 else 1.0 - ay) * (ax if dx == 1 else 1.0 - ax)
    inside = kmask & (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
    return yy * W + xx, wgt, inside


@triton.jit
def _gather_fwd(
    fmap_ptr, xy_ptr, counts_ptr, out_ptr, K, C, H, W, in_h, in_w, BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr
):
    b = tl.program_id(0).to(tl.int64)  # int64: B * C * H * W may pass 2**31 elements
    k_offs = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    c_offs = (tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)).to(tl.int64)
    kmask, x0, y0, ax, ay = _corner_setup(xy_ptr, counts_ptr, b, k_offs, K, H, W, in_h, in_w)
    cmask = c_offs < C
    acc = tl.zeros((BLOCK_K, BLOCK_C), dtype=tl.float32)
    base = fmap_ptr + b * C * H * W + c_offs[None, :] * H * W
    for dy in tl.static_range(2):
        for dx in tl.static_range(2):
            offset, wgt, inside = _corner(dy, dx, x0, y0, ax, ay, kmask, H, W)
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
    in_h,
    in_w,
    BLOCK_K: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)  # int64: B * C * H * W may pass 2**31 elements
    k_offs = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    c_offs = (tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)).to(tl.int64)
    kmask, x0, y0, ax, ay = _corner_setup(xy_ptr, counts_ptr, b, k_offs, K, H, W, in_h, in_w)
    cmask = c_offs < C
    g = tl.load(
        grad_out_ptr + (b * K + k_offs)[:, None] * C + c_offs[None, :], mask=kmask[:, None] & cmask[None, :], other=0.0
    ).to(tl.float32)
    base = grad_fmap_ptr + b * C * H * W + c_offs[None, :] * H * W
    for dy in tl.static_range(2):
        for dx in tl.static_range(2):
            offset, wgt, inside = _corner(dy, dx, x0, y0, ax, ay, kmask, H, W)
            m = inside[:, None] & cmask[None, :]
            tl.atomic_add(base + offset[:, None], wgt[:, None] * g, mask=m)


def _launch_args(fmap, xy, counts, input_hw, block_k, block_c):
    b, c, h, w = fmap.shape
    k = xy.shape[1]
    grid = (b, triton.cdiv(max(k, 1), block_k), triton.cdiv(c, block_c))
    return grid, (k, c, h, w, float(input_hw[0]), float(input_hw[1]))


def _counts(xy: torch.Tensor, counts: torch.Tensor | None) -> torch.Tensor:
    if counts is None:
        return torch.full((xy.shape[0],), xy.shape[1], dtype=torch.int32, device=xy.device)
    return counts.to(device=xy.device, dtype=torch.int32).contiguous()


class _TritonGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, fmap, xy, input_hw, counts, block_k, block_c):
        fmap_c, xy32 = fmap.contiguous(), xy.detach().float().contiguous()
        n = _counts(xy, counts)
        out = torch.empty(fmap.shape[0], xy.shape[1], fmap.shape[1], dtype=fmap.dtype, device=fmap.device)
        grid, dims = _launch_args(fmap, xy, n, input_hw, block_k, block_c)
        if out.numel() > 0:  # K = 0, B = 0 or C = 0: nothing to launch
            _gather_fwd[grid](fmap_c, xy32, n, out, *dims, BLOCK_K=block_k, BLOCK_C=block_c)
        ctx.save_for_backward(xy32, n)
        ctx.meta = (tuple(fmap.shape), fmap.dtype, input_hw, block_k, block_c)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        xy32, n = ctx.saved_tensors
        shape, dtype, input_hw, block_k, block_c = ctx.meta
        grad = torch.zeros(shape, dtype=torch.float32, device=grad_out.device)
        grid, dims = _launch_args(grad, xy32, n, input_hw, block_k, block_c)
        if grad_out.numel() > 0:
            _gather_bwd[grid](grad_out.contiguous(), xy32, n, grad, *dims, BLOCK_K=block_k, BLOCK_C=block_c)
        return grad.to(dtype), None, None, None, None, None


def gather_points(
    fmap: torch.Tensor,
    xy: torch.Tensor,
    input_hw: tuple[int, int],
    counts: torch.Tensor | None = None,
    block_k: int = 16,
    block_c: int = 64,
) -> torch.Tensor:
    """Triton version of :func:`kernels.point_gather.reference.gather_points`; differentiable in ``fmap``."""
    return _TritonGather.apply(fmap, xy, (int(input_hw[0]), int(input_hw[1])), counts, block_k, block_c)
