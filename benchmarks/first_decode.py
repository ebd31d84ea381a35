"""A fresh process's first CPU decode (peak finding, then point gather) and the median of 20 more, for one kernel
implementation: ``python benchmarks/first_decode.py numba|native|reference``.

16 centre maps of 56 x 56 cells with about 150 peaks each and a 256-channel planar feature map: one pipeline batch of
``muse_r18``. The first call includes importing the implementation and loading its compiled code.
"""

from __future__ import annotations

import sys
import time

import torch

from muse_fast.kernels.peaks import find_peaks
from muse_fast.kernels.point_gather import gather_points


def decode(heat: torch.Tensor, fmap: torch.Tensor, impl: str) -> tuple:
    peaks = find_peaks(heat, 0.3, 1, 512, impl=impl)
    xy = peaks.yx.flip(-1).float() * 4 + 2
    return peaks, gather_points(fmap, xy, (224, 224), peaks.counts, impl=impl)


def main(impl: str) -> None:
    torch.manual_seed(0)
    heat = torch.rand(16, 56, 56) * 0.2
    for b in range(16):
        heat[b].view(-1)[torch.randint(0, 56 * 56, (150,))] = torch.rand(150) * 0.5 + 0.5
    fmap = torch.randn(16, 256, 56, 56)
    start = time.perf_counter()
    decode(heat, fmap, impl)
    first = time.perf_counter() - start
    times = []
    for _ in range(20):
        start = time.perf_counter()
        peaks, feats = decode(heat, fmap, impl)
        times.append(time.perf_counter() - start)
    times.sort()
    print(f"{impl} first call {first:.3f} s, median {times[10] * 1000:.2f} ms, {int(peaks.counts.sum())} peaks")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "auto")
