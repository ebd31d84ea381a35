"""Plain-PyTorch point-feature gather (MUSE's ``O_bi``): the oracle for every other implementation.

Bilinear sampling of ``fmap [B, C, Hf, Wf]`` at per-image float coordinates ``xy [B, K, 2]`` given as (x, y) in
*input-image* pixels, with the official convention ``grid = 2 * xy / input_size - 1`` and
``grid_sample(mode='bilinear', align_corners=True, padding_mode='zeros')`` (method.md 2.3). Differentiable in
``fmap`` (and ``xy``) through autograd.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gather_points(fmap: torch.Tensor, xy: torch.Tensor, input_hw: tuple[int, int]) -> torch.Tensor:
    """Sample ``fmap`` at ``xy`` (input pixels) -> ``[B, K, C]``; ``input_hw`` is the network input (H, W)."""
    if fmap.dim() != 4 or xy.dim() != 3 or xy.shape[-1] != 2 or xy.shape[0] != fmap.shape[0]:
        raise ValueError(f"expected fmap [B,C,H,W] and xy [B,K,2], got {tuple(fmap.shape)} and {tuple(xy.shape)}")
    h, w = input_hw
    scale = torch.tensor([2.0 / w, 2.0 / h], dtype=torch.float32, device=xy.device)
    grid = (xy.float() * scale - 1.0)[:, None].to(fmap.dtype)  # [B, 1, K, 2]
    out = F.grid_sample(fmap, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out[:, :, 0].transpose(1, 2)
