"""The compacted peak layout shared by every peaks implementation and by the point gather."""

from __future__ import annotations

from typing import NamedTuple

import torch

# Tests set this to True so that any output slot an implementation forgets to write shows up as NaN / -1.
FILL_UNWRITTEN_LOUDLY = False


class Peaks(NamedTuple):
    yx: torch.Tensor  # [B, K, 2] int32 (row, col) of each peak; rows >= counts[b] are padding
    scores: torch.Tensor  # [B, K] heatmap value at the peak
    counts: torch.Tensor  # [B] int32 number of valid rows per image
    overflow: torch.Tensor  # [B] int32 number of peaks dropped by the max_points cap


def empty_peaks(batch: int, max_points: int, device: torch.device, dtype: torch.dtype = torch.float32) -> Peaks:
    """Allocate outputs: zeros normally, -1 / NaN when ``FILL_UNWRITTEN_LOUDLY`` (tests)."""
    loud = FILL_UNWRITTEN_LOUDLY
    yx = torch.full((batch, max_points, 2), -1 if loud else 0, dtype=torch.int32, device=device)
    score_dtype = dtype if dtype.is_floating_point else torch.float32
    scores = torch.full((batch, max_points), float("nan") if loud else 0.0, dtype=score_dtype, device=device)
    counts = torch.zeros(batch, dtype=torch.int32, device=device)
    overflow = torch.zeros(batch, dtype=torch.int32, device=device)
    return Peaks(yx, scores, counts, overflow)
