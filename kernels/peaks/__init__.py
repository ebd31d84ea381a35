"""Peak-finding NMS with compaction. Call :func:`find_peaks`; implementations are picked in one place."""

from __future__ import annotations

import torch

from . import reference
from .types import Peaks

IMPLEMENTATIONS = ("reference",)


def find_peaks(
    heatmap: torch.Tensor,
    threshold: float,
    min_distance: int = 1,
    max_points: int = 1024,
    exclude_border: int = 0,
    impl: str = "auto",
) -> Peaks:
    """Local maxima of ``heatmap [B, H, W]`` above ``threshold``, compacted per image (see ``reference``)."""
    if impl not in ("auto", *IMPLEMENTATIONS):
        raise ValueError(f"unknown peaks implementation '{impl}'; choose one of: auto, {', '.join(IMPLEMENTATIONS)}")
    return reference.find_peaks(heatmap, threshold, min_distance, max_points, exclude_border)


__all__ = ["Peaks", "find_peaks"]
