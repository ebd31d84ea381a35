"""Point-feature gather (bilinear, official MUSE convention). Call :func:`gather_points`."""

from __future__ import annotations

import torch

from . import reference

IMPLEMENTATIONS = ("reference",)


def gather_points(fmap: torch.Tensor, xy: torch.Tensor, input_hw: tuple[int, int], impl: str = "auto") -> torch.Tensor:
    """Bilinear features of ``fmap [B,C,H,W]`` at ``xy [B,K,2]`` (x, y in input pixels) -> ``[B, K, C]``."""
    if impl not in ("auto", *IMPLEMENTATIONS):
        raise ValueError(f"unknown gather implementation '{impl}'; choose one of: auto, {', '.join(IMPLEMENTATIONS)}")
    return reference.gather_points(fmap, xy, input_hw)


__all__ = ["gather_points"]
