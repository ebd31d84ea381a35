"""The fused decode op (``muse_fast::NucleiDecode``, the TensorRT plugin's op): peaks -> positions -> features.

Inputs: ``heat [B, H, W]`` (centre probabilities), ``offsets [B, 2, H, W]`` (dx, dy in cells), ``fmap [B, D, H, W]``.
Outputs, fixed capacity ``K = max_points``: ``xy [B, K, 2]`` (x, y in input pixels), ``scores [B, K]``,
``counts [B]`` (int32, rows kept), ``overflow [B]`` (int32, peaks dropped by the cap), ``feats [B, K, D]``. Rows past
``counts`` are zeros. :func:`reference` composes the PyTorch references exactly as ``muse_fast/post/decode.py``
does; :func:`native` runs ``csrc/`` (the plugin's code) on CPU or CUDA tensors.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from . import native as native_lib
from .peaks import find_peaks
from .point_gather import gather_points

OP_TYPE, DOMAIN, VERSION = "NucleiDecode", "muse_fast", "1"


class DecodeParams(NamedTuple):
    threshold: float
    min_distance: int
    max_points: int
    exclude_border: int
    stride: int
    input_hw: tuple[int, int]


class Decoded(NamedTuple):
    xy: torch.Tensor
    scores: torch.Tensor
    counts: torch.Tensor
    overflow: torch.Tensor
    feats: torch.Tensor


def positions(yx: torch.Tensor, offsets: torch.Tensor, stride: float) -> torch.Tensor:
    """Input-pixel ``xy [B, K, 2]`` of the peak cells ``yx [B, K, 2]`` (padding rows -1 read cell 0) plus their
    sub-cell offsets ``offsets [B, 2, H, W]`` (dx, dy, clamped to [0, 1]); every decoder places nuclei with this."""
    b, k = yx.shape[:2]
    rows, cols = yx[..., 0].long().clamp(min=0), yx[..., 1].long().clamp(min=0)
    batch = torch.arange(b, device=offsets.device)[:, None].expand(b, k)
    off = offsets[batch, :, rows, cols].float()  # [B, K, 2] (dx, dy) in cells
    return stride * (torch.stack([cols, rows], dim=-1).float() + off.clamp(0.0, 1.0))


def reference(heat: torch.Tensor, offsets: torch.Tensor, fmap: torch.Tensor, p: DecodeParams) -> Decoded:
    """The op in plain PyTorch (the oracle)."""
    peaks = find_peaks(heat.float(), p.threshold, p.min_distance, p.max_points, p.exclude_border, impl="reference")
    valid = torch.arange(p.max_points, device=heat.device)[None, :] < peaks.counts[:, None]
    xy = torch.where(valid[..., None], positions(peaks.yx, offsets, p.stride), 0.0)
    feats = gather_points(fmap.float(), xy, p.input_hw, peaks.counts, impl="reference")
    scores = torch.where(valid, peaks.scores.float(), 0.0)
    return Decoded(xy, scores, peaks.counts, peaks.overflow, feats)


def native(heat: torch.Tensor, offsets: torch.Tensor, fmap: torch.Tensor, p: DecodeParams) -> Decoded:
    """The op through the native library of the tensors' device (what the TensorRT plugin runs on the GPU)."""
    lib = native_lib.library(heat.device.type)
    heat, offsets, fmap = (t.detach().float().contiguous() for t in (heat, offsets, fmap))
    (b, h, w), d, k = heat.shape, fmap.shape[1], max(int(p.max_points), 0)
    kw = {"device": heat.device}
    out = Decoded(
        torch.empty(b, k, 2, **kw),
        torch.empty(b, k, **kw),
        torch.empty(b, dtype=torch.int32, **kw),
        torch.empty(b, dtype=torch.int32, **kw),
        torch.empty(b, k, d, **kw),
    )
    args = [native_lib.ptr(t) for t in (heat, offsets, fmap)] + [b, d, h, w, float(p.threshold), int(p.min_distance)]
    args += [max(int(p.exclude_border), 0), k, float(p.stride), float(p.input_hw[0]), float(p.input_hw[1])]
    args += [native_lib.ptr(t) for t in out]
    if heat.is_cuda:
        with torch.cuda.device(heat.device):
            ws = native_lib.workspace(lib, "muse_decode_cuda_workspace", heat.device, b, h, w, k)
            native_lib.call(lib, "muse_decode_cuda", *args, native_lib.ptr(ws), native_lib.stream_of(heat))
    else:
        native_lib.call(lib, "muse_decode_cpu", *args)
    return out
