"""An fp64 oracle for the point gather and the error bound every implementation must meet against it.

Implementations are compared with the fp64 result, never with each other: two correct fp32 kernels can differ by
twice the bound (e.g. 4.1e-5 measured between Triton and the reference, each within 3e-5 of fp64). Per element:

- arithmetic: four products summed in fp32 and one weight per corner, so at most ``ARITH * eps32 * sum|w v|``
  (``sum|w v|`` is the gather of ``|fmap|`` in fp64). The backward sums up to ``K`` contributions per pixel in any
  order (atomics), so ``(K + ARITH) * eps32 * sum|w g|``;
- coordinates: x * (W - 1) / in_w is rounded in fp32 (the reference's grid normalisation rounds a few times more),
  which moves a point by at most ``COORD * eps32 * max(H, W)`` cells; a shift of d cells changes a bilinear value by
  at most ``d * 2 max|fmap|`` (and a weight by ``d``, times ``sum |g|`` of the image for the backward);
- output rounding: the result is stored in the map's dtype, at most one ulp: ``eps(dtype) * |fp64 result|``.
"""

from __future__ import annotations

import torch

from muse_fast.kernels.point_gather import gather_points

ARITH = 8
COORD = 4
EPS32 = torch.finfo(torch.float32).eps


def oracle(fmap, xy, input_hw, counts, grad_out):
    """fp64 forward, backward and their per-element bounds for ``fmap`` of any dtype (all on fmap's device)."""
    f64 = fmap.detach().double().requires_grad_(True)
    xy64 = xy.detach().float().double()  # the kernels read fp32 coordinates: start from the same values
    out = gather_points(f64, xy64, input_hw, counts, impl="reference")
    (grad,) = torch.autograd.grad(out, f64, grad_out.double())
    abs_out = gather_points(f64.detach().abs(), xy64, input_hw, counts, impl="reference")
    a64 = f64.detach().clone().requires_grad_(True)
    abs_ref = gather_points(a64, xy64, input_hw, counts, impl="reference")
    (abs_grad,) = torch.autograd.grad(abs_ref, a64, grad_out.abs().double())
    h, w = fmap.shape[-2:]
    shift = COORD * EPS32 * max(h, w)
    eps = torch.finfo(fmap.dtype).eps
    tol_out = ARITH * EPS32 * abs_out + shift * 2 * f64.detach().abs().max() + eps * out.detach().abs()
    per_image_g = grad_out.abs().double().sum(dim=1)[:, :, None, None]  # [B, C, 1, 1]: sum_k |g| per channel
    k = xy.shape[1]
    tol_grad = (k + ARITH) * EPS32 * abs_grad + shift * per_image_g + eps * grad.abs()
    return out.detach(), tol_out, grad, tol_grad


def check_gather(fmap, xy, input_hw, counts, impl, seed=0):
    """Forward and backward of ``impl`` within the bounds above of the fp64 oracle; returns the worst ratios."""
    g = torch.Generator().manual_seed(seed)
    b, c = fmap.shape[:2]
    grad_out = torch.randn(b, xy.shape[1], c, generator=g).to(fmap.device, fmap.dtype)
    out64, tol_out, grad64, tol_grad = oracle(fmap, xy, input_hw, counts, grad_out)
    f = fmap.detach().clone().requires_grad_(True)
    got = gather_points(f, xy, input_hw, counts, impl=impl)
    assert got.dtype == fmap.dtype and got.shape == out64.shape
    err = (got.detach().double() - out64).abs()
    assert (err <= tol_out).all(), f"{impl} forward: worst error {float((err - tol_out).max()):.3g} over the bound"
    if got.numel():
        (grad,) = torch.autograd.grad(got, f, grad_out)
        gerr = (grad.double() - grad64).abs()
        assert (gerr <= tol_grad).all(), f"{impl} backward: {float((gerr - tol_grad).max()):.3g} over the bound"
    return float((err / tol_out.clamp_min(1e-30)).max()) if err.numel() else 0.0
