"""Decode a batch on the device with one packed device -> host copy (the CUDA path of :mod:`.decode`).

:func:`decode_batch` reads the peak counts back several times per batch and its caller copies four arrays per tile,
each a blocking sync from pageable memory. Here every step stays on the device with static shapes (``k`` rows per
tile, padding included), the results are packed into one ``float32 [B, 1 + 5k]`` tensor (count, then x, y, score,
class id, class probability per row; with ``features``, then the ``D`` point features of each row) and copied once
into a pinned host buffer that lives as long as the decoder.
The nuclei are those of :func:`decode_batch` (tested): when a tile has more than ``k`` peaks, the batch is decoded
again with a ``k`` that fits (a second copy; ``k`` then stays larger for the rest of the run).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from muse_fast.kernels.nuclei_decode import positions
from muse_fast.kernels.peaks import find_peaks
from muse_fast.kernels.point_gather import gather_points

from .decode import DecodeConfig

FIELDS = 5  # x, y, score, class id, class probability
START_ROWS = 256  # rows per tile decoded at first; grows to the next power of two above the largest count seen


def _no_transfer_hook(name: str, nbytes: int) -> None:
    return None


# Test seam: called with a name and the byte count of every device -> host copy this module makes.
TRANSFER_HOOK: Callable[[str, int], None] = _no_transfer_hook


class TileArrays(NamedTuple):
    xy: np.ndarray  # [N, 2] float32 (x, y) in tile input pixels
    score: np.ndarray  # [N] float32
    class_id: np.ndarray  # [N] int64
    class_prob: np.ndarray  # [N] float32
    feat: np.ndarray | None = None  # [N, D] float32 point features (only when decoded with ``features``)


@torch.no_grad()
def decode_packed(
    centre: torch.Tensor,
    fmap: torch.Tensor,
    classifier: nn.Module | Callable,
    input_hw: tuple[int, int],
    stride: int,
    cfg: DecodeConfig,
    rows: int,
    features: bool = False,
) -> torch.Tensor:
    """``float32 [B, 1 + (5 + D) * rows]`` (``D`` = 0 without ``features``) on the tensors' device, without a host
    sync (see the module docstring)."""
    device = centre.device
    heat = torch.sigmoid(centre[:, 0].float())
    peaks = find_peaks(heat, cfg.threshold, cfg.min_distance, cfg.max_points)
    b, k = centre.shape[0], min(rows, cfg.max_points)
    counts = peaks.counts.to(device)
    kept = counts.clamp(max=k)
    valid = torch.arange(k, device=device)[None, :] < kept[:, None]
    xy = positions(peaks.yx[:, :k].to(device), centre[:, 1:3], stride)
    feats = gather_points(fmap, xy, input_hw, kept, out_dtype=torch.float32)  # padding rows are zeros; unrounded
    probs = torch.softmax(classifier(feats.reshape(b * k, -1)).float(), dim=-1)
    class_prob, class_id = probs.max(dim=-1)
    scores = torch.where(valid, peaks.scores[:, :k].float().nan_to_num(0.0), 0.0)
    columns = [
        counts.float()[:, None],
        torch.where(valid[..., None], xy, 0.0).reshape(b, 2 * k),
        scores,
        torch.where(valid, class_id.reshape(b, k).float(), 0.0),
        torch.where(valid, class_prob.reshape(b, k), 0.0),
    ]
    if features:
        columns.append(feats.float().reshape(b, -1))
    return torch.cat(columns, dim=1)


def unpack(host: np.ndarray, rows: int, dim: int = 0) -> list[TileArrays]:
    """Per-tile arrays (copies) from a packed ``[B, 1 + (5 + dim) * rows]`` host array (``dim`` features per row)."""
    counts = host[:, 0].astype(np.int64)
    xy = host[:, 1 : 1 + 2 * rows].reshape(-1, rows, 2)
    score = host[:, 1 + 2 * rows : 1 + 3 * rows]
    class_id = host[:, 1 + 3 * rows : 1 + 4 * rows]
    class_prob = host[:, 1 + 4 * rows : 1 + 5 * rows]
    feat = host[:, 1 + 5 * rows : 1 + (5 + dim) * rows].reshape(-1, rows, dim) if dim else None
    return [
        TileArrays(
            xy[i, :n].copy(),
            score[i, :n].copy(),
            class_id[i, :n].astype(np.int64),
            class_prob[i, :n].copy(),
            None if feat is None else feat[i, :n].copy(),
        )
        for i, n in enumerate(counts)
    ]


class PackedDecoder:
    """Device decode with a persistent (pinned on CUDA) host buffer; one instance per thread."""

    def __init__(self, rows: int = START_ROWS) -> None:
        self.rows = rows
        self._host: torch.Tensor | None = None

    def _buffer(self, packed: torch.Tensor) -> torch.Tensor:
        n = packed.numel()
        if self._host is None or self._host.numel() < n:
            self._host = torch.empty(max(n, 1), dtype=torch.float32, pin_memory=packed.is_cuda)
        return self._host[:n].view(packed.shape)

    def __call__(
        self,
        centre: torch.Tensor,
        fmap: torch.Tensor,
        classifier: nn.Module | Callable,
        input_hw: tuple[int, int],
        stride: int,
        cfg: DecodeConfig,
        features: bool = False,
    ) -> list[TileArrays]:
        rows = min(self.rows, cfg.max_points)
        packed = decode_packed(centre, fmap, classifier, input_hw, stride, cfg, rows, features)
        host = self._buffer(packed)
        host.copy_(packed, non_blocking=packed.is_cuda)
        TRANSFER_HOOK("decode", packed.numel() * packed.element_size())
        if packed.is_cuda:
            done = torch.cuda.Event()
            done.record(torch.cuda.current_stream(packed.device))
            done.synchronize()  # the one wait per batch, on this thread only
        array = host.numpy()
        most = int(array[:, 0].max()) if len(array) else 0
        if most > rows:  # more peaks in a tile than rows decoded: decode again with enough rows
            self.rows = 1 << (most - 1).bit_length()
            return self(centre, fmap, classifier, input_hw, stride, cfg, features)
        return unpack(array, rows, fmap.shape[1] if features else 0)
