"""Point-classifier losses: cross-entropy, class-balanced cross-entropy and focal loss (one entry point)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

CLS_LOSSES = ("ce", "balanced", "focal")


def class_weights(labels: np.ndarray, num_classes: int, power: float = 1.0) -> torch.Tensor:
    """Inverse-frequency weights ``(n / (C * n_c)) ** power`` from the training labels (mean over samples is 1)."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = (counts.sum() / (num_classes * np.maximum(counts, 1))) ** power
    return torch.tensor(weights, dtype=torch.float32)


def point_class_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    kind: str = "ce",
    weights: torch.Tensor | None = None,
    gamma: float = 2.0,
) -> torch.Tensor:
    """Mean loss over labelled points (``labels == -100`` is padding).

    ``ce``: plain cross-entropy. ``balanced``: cross-entropy weighted by ``weights`` (see :func:`class_weights`),
    normalised by the summed weights as in ``F.cross_entropy``. ``focal``: ``(1 - p_t) ** gamma`` times the
    (optionally weighted) cross-entropy, averaged over points.
    """
    logits, labels = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
    keep = labels >= 0
    if not bool(keep.any()):
        return logits.sum() * 0
    logits, labels = logits[keep], labels[keep]
    w = weights.to(logits.device) if weights is not None and kind != "ce" else None
    if kind in ("ce", "balanced"):
        return F.cross_entropy(logits, labels, weight=w)
    if kind == "focal":
        log_p = F.log_softmax(logits.float(), dim=-1).gather(1, labels[:, None])[:, 0]
        ce = -log_p * (w[labels] if w is not None else 1.0)
        return ((1 - log_p.exp()) ** gamma * ce).mean()
    raise ValueError(f"unknown classifier loss '{kind}'; choose one of: {', '.join(CLS_LOSSES)}")
