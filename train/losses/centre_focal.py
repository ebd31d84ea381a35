"""CenterNet's penalty-reduced focal loss on the centre heatmap."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def centre_focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 2.0,
    beta: float = 4.0,
    ignore: torch.Tensor | None = None,
) -> torch.Tensor:
    """``logits`` and ``target`` ``[B, h, w]``; target 1 at centres, Gaussian falloff elsewhere. Mean over positives.

    ``ignore`` (bool ``[B, h, w]``) leaves those cells out of the negatives (never out of the positives)."""
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = target >= 1.0
    neg = ~pos if ignore is None else ~pos & ~ignore
    log_p, log_1mp = F.logsigmoid(logits), F.logsigmoid(-logits)
    pos_loss = -((1 - p) ** alpha * log_p)[pos].sum()
    neg_loss = -((1 - target) ** beta * p**alpha * log_1mp)[neg].sum()
    return (pos_loss + neg_loss) / pos.sum().clamp(min=1)
