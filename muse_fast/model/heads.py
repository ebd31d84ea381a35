"""Task heads: nucleus-centre heatmap (with sub-cell offsets) and point classifier on sampled features."""

from __future__ import annotations

import math

import torch
from torch import nn

HEATMAP_PRIOR = 0.01  # initial foreground probability of the centre heatmap (CenterNet-style bias init)


class CentreHead(nn.Module):
    """Dense head on the stride-4 map: channel 0 = centre logit, channels 1-2 = (dx, dy) offset in cells.

    A nucleus at input pixel ``(x, y)`` is assigned to cell ``(floor(x/4), floor(y/4))`` with offset
    ``(x/4 - floor(x/4), y/4 - floor(y/4))`` in [0, 1), so positions are recovered to sub-pixel precision as
    ``stride * (cell + offset)``.
    """

    def __init__(self, in_ch: int, hidden: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_ch, hidden, 3, padding=1), nn.ReLU(inplace=True))
        self.out = nn.Conv2d(hidden, 3, 1)
        nn.init.zeros_(self.out.weight)
        with torch.no_grad():
            self.out.bias.copy_(torch.tensor([math.log(HEATMAP_PRIOR / (1 - HEATMAP_PRIOR)), 0.5, 0.5]))

    def forward(self, fmap: torch.Tensor, fp32_out: bool = False) -> torch.Tensor:
        """``fp32_out``: the last 1x1 conv runs in fp32 even under autocast. Logits rounded to bf16 tie neighbouring
        cells, and the peak finder drops plateaus (0.7% fewer nuclei on CMU-1 with all of it in bf16)."""
        hidden = self.body(fmap)
        if not fp32_out:
            return self.out(hidden)
        with torch.autocast(hidden.device.type, enabled=False):
            return self.out(hidden.float())


class PointClassifier(nn.Module):
    """MLP on point features ``[..., D] -> [..., num_classes]`` logits."""

    def __init__(self, in_dim: int, num_classes: int, hidden: int = 256) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, num_classes)
        )

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.mlp(feats)
