"""Triton peak finding with compaction: local-maximum test, tie rule and threshold in one pass, survivors written
densely per image through a block prefix sum and one atomic per block (the host never sees the heatmap).

Semantics are those of ``reference.py``. Candidates land in a per-image buffer in arbitrary block order; a small
on-device sort then orders them by score (ties in raster order) and applies the ``max_points`` cap, so the result
is deterministic and identical to the reference. If an image has more candidates than the buffer holds, the kernel
runs once more with a buffer that fits (only the per-image counts are read back).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..grid import peaks_grids
from .types import Peaks, empty_peaks


@triton.jit
def _peaks_kernel(
    x_ptr,
    flat_ptr,
    counter_ptr,
    cand_idx_ptr,
    cand_score_ptr,
    H,
    W,
    CAP,
    threshold,
    R: tl.constexpr,
    EXCLUDE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)  # pixel blocks on axis 0 (axes 1, 2 stop at 65,535)
    b = tl.program_id(1).to(tl.int64)  # int64: B * H * W may pass 2**31 elements
    hw = H * W
    valid = offs < hw
    r = offs // W
    c = offs % W
    img = x_ptr + b * hw
    v = tl.load(img + offs, mask=valid, other=float("-inf")).to(tl.float32)
    flat = tl.load(flat_ptr + b)  # 1 when the image is constant: no peaks at all
    keep = valid & (v > threshold) & (flat == 0)
    keep = keep & (r >= EXCLUDE) & (r < H - EXCLUDE) & (c >= EXCLUDE) & (c < W - EXCLUDE)
    for dy in tl.static_range(-R, R + 1):
        for dx in tl.static_range(-R, R + 1):
            if dy != 0 or dx != 0:
                rr = r + dy
                cc = c + dx
                inside = valid & (rr >= 0) & (rr < H) & (cc >= 0) & (cc < W)
                nv = tl.load(img + rr * W + cc, mask=inside, other=float("-inf")).to(tl.float32)
                keep = keep & (nv <= v)
                if dy < 0 or (dy == 0 and dx < 0):  # tie rule: an equal value earlier in raster order wins
                    keep = keep & (nv != v)
    k = keep.to(tl.int32)
    total = tl.sum(k, axis=0)
    base = tl.atomic_add(counter_ptr + b, total)
    slot = base + tl.cumsum(k, axis=0) - 1
    ok = keep & (slot < CAP)
    tl.store(cand_idx_ptr + b * CAP + slot, offs, mask=ok)
    tl.store(cand_score_ptr + b * CAP + slot, v, mask=ok)


def _candidates(x: torch.Tensor, threshold: float, r: int, exclude: int, cap: int, block: int):
    b, h, w = x.shape
    flat_view = x.reshape(b, -1)
    is_flat = (flat_view.amax(1) == flat_view.amin(1)).to(torch.int32)
    counter = torch.zeros(b, dtype=torch.int32, device=x.device)
    cand_idx = torch.full((b, cap), -1, dtype=torch.int32, device=x.device)
    cand_score = torch.full((b, cap), float("-inf"), dtype=torch.float32, device=x.device)
    for s, e, grid in peaks_grids(b, h * w, block):
        _peaks_kernel[grid](
            x[s:e],
            is_flat[s:e],
            counter[s:e],
            cand_idx[s:e],
            cand_score[s:e],
            h,
            w,
            cap,
            float(threshold),
            R=r,
            EXCLUDE=exclude,
            BLOCK=block,
        )
    return counter, cand_idx, cand_score


# Maps up to this many pixels get a candidate buffer of one slot per pixel, so the buffer can never overflow and the
# host never reads the counts (no device -> host sync); larger maps read them once and rerun if needed.
SYNC_FREE_PIXELS = 1 << 16


def find_peaks(
    heatmap: torch.Tensor,
    threshold: float,
    min_distance: int = 1,
    max_points: int = 1024,
    exclude_border: int = 0,
    block: int = 1024,
) -> Peaks:
    """Triton implementation of :func:`kernels.peaks.reference.find_peaks`."""
    x = heatmap.detach().float().contiguous()
    b, h, w = x.shape
    if b == 0 or h * w == 0:
        return empty_peaks(b, max_points, heatmap.device, heatmap.dtype)  # padding rows stay as allocated
    cap = h * w if h * w <= SYNC_FREE_PIXELS else max(1, min(max_points, h * w))
    counter, cand_idx, cand_score = _candidates(x, threshold, int(min_distance), int(exclude_border), cap, block)
    needed = int(counter.max()) if cap < h * w else 0  # large maps only: the one small device -> host read
    if needed > cap:
        cap = needed
        counter, cand_idx, cand_score = _candidates(x, threshold, int(min_distance), int(exclude_border), cap, block)
    # order: score descending, ties by raster index ascending (two stable sorts); empty slots sort last
    raster = torch.where(cand_idx >= 0, cand_idx, torch.iinfo(torch.int32).max)
    order = torch.sort(raster, dim=1, stable=True).indices
    cand_idx, cand_score = cand_idx.gather(1, order), cand_score.gather(1, order)
    order = torch.sort(cand_score, dim=1, descending=True, stable=True).indices
    cand_idx, cand_score = cand_idx.gather(1, order), cand_score.gather(1, order)
    out = empty_peaks(b, max_points, heatmap.device, heatmap.dtype)
    kept = torch.clamp(counter, max=max_points)
    n = min(max_points, cap)
    slot = torch.arange(n, device=x.device)[None, :] < kept[:, None]
    idx = cand_idx[:, :n].long()
    out.yx[:, :n, 0] = torch.where(slot, idx // w, out.yx[:, :n, 0].long()).to(torch.int32)
    out.yx[:, :n, 1] = torch.where(slot, idx % w, out.yx[:, :n, 1].long()).to(torch.int32)
    out.scores[:, :n] = torch.where(slot, cand_score[:, :n], out.scores[:, :n].float()).to(out.scores.dtype)
    out.counts.copy_(kept)
    out.overflow.copy_(counter - kept)
    return out
