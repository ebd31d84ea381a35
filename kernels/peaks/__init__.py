"""Peak-finding NMS with compaction. Call :func:`find_peaks`; the implementation is chosen in ``kernels.registry``."""

from __future__ import annotations

import torch

from ..registry import implementations, select
from .types import Peaks

IMPLEMENTATIONS = implementations(__name__)


def find_peaks(
    heatmap: torch.Tensor,
    threshold: float,
    min_distance: int = 1,
    max_points: int = 1024,
    exclude_border: int = 0,
    impl: str = "auto",
) -> Peaks:
    """Local maxima of ``heatmap [B, H, W]`` above ``threshold``, compacted per image (semantics: ``reference``)."""
    if heatmap.dim() != 3:
        raise ValueError(f"heatmap must be [B, H, W], got {tuple(heatmap.shape)}")
    fn = select(IMPLEMENTATIONS, impl, heatmap).function("find_peaks")
    return fn(heatmap, threshold, min_distance, max_points, exclude_border)


__all__ = ["IMPLEMENTATIONS", "Peaks", "find_peaks"]
