"""Point-feature gather (bilinear, official MUSE convention). Call :func:`gather_points`; the implementation is
chosen in ``kernels.registry``. All implementations are differentiable in the feature map."""

from __future__ import annotations

import torch

from ..registry import implementations, select

IMPLEMENTATIONS = implementations(__name__)


def gather_points(
    fmap: torch.Tensor,
    xy: torch.Tensor,
    input_hw: tuple[int, int],
    counts: torch.Tensor | None = None,
    impl: str = "auto",
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Bilinear features of ``fmap [B,C,H,W]`` at ``xy [B,K,2]`` (x, y in input pixels) -> ``[B, K, C]``.

    ``counts [B]`` (the peaks layout) marks rows ``k >= counts[b]`` as padding: they come out as zeros. Every
    implementation sums in fp32 and returns ``out_dtype`` (default: the map's dtype; fp32 keeps a bf16 map's features
    unrounded).
    """
    if fmap.dim() != 4 or xy.dim() != 3 or xy.shape[-1] != 2 or xy.shape[0] != fmap.shape[0]:
        raise ValueError(f"expected fmap [B,C,H,W] and xy [B,K,2], got {tuple(fmap.shape)} and {tuple(xy.shape)}")
    fn = select(IMPLEMENTATIONS, impl, fmap).function("gather_points")
    return fn(fmap, xy, (int(input_hw[0]), int(input_hw[1])), counts, out_dtype=out_dtype)


__all__ = ["IMPLEMENTATIONS", "gather_points"]
