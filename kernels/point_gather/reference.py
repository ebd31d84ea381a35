"""Plain-PyTorch point-feature gather (MUSE's ``O_bi``): the oracle for every other implementation.

Bilinear sampling (computed in fp32, returned in the map's dtype) of ``fmap [B, C, Hf, Wf]`` at per-image float
coordinates ``xy [B, K, 2]`` given as (x, y) in *input-image* pixels, with the official convention
``grid = 2 * xy / input_size - 1`` and ``grid_sample(mode='bilinear', align_corners=True, padding_mode='zeros')``
(method.md 2.3). Differentiable in ``fmap`` (and ``xy``) through autograd.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gather_points(
    fmap: torch.Tensor,
    xy: torch.Tensor,
    input_hw: tuple[int, int],
    counts: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Sample ``fmap`` at ``xy`` (input pixels) -> ``[B, K, C]`` in ``out_dtype`` (default: the map's);
    ``input_hw`` is the network input (H, W).

    Rows ``k >= counts[b]`` are padding and come out as zeros.
    """
    h, w = input_hw
    scale = torch.tensor([2.0 / w, 2.0 / h], dtype=torch.float32, device=xy.device)
    grid = (xy.float() * scale - 1.0)[:, None]  # [B, 1, K, 2]
    # sample in fp32 (half-precision grids would move points by up to ~0.03 px), return the map's dtype
    compute = torch.float64 if fmap.dtype == torch.float64 else torch.float32
    out = F.grid_sample(fmap.to(compute), grid.to(compute), mode="bilinear", padding_mode="zeros", align_corners=True)
    out = out[:, :, 0].transpose(1, 2).to(out_dtype or fmap.dtype)
    if counts is not None:
        valid = torch.arange(xy.shape[1], device=out.device)[None, :] < counts.to(out.device)[:, None]
        out = out * valid[..., None].to(out.dtype)
    return out
