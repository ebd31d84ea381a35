"""Kernels: peak finding (reference vs scipy's maximum_filter approach) and the point gather, on CPU."""

import numpy as np
import pytest
import torch
from scipy.ndimage import maximum_filter

from kernels.peaks import find_peaks
from kernels.point_gather import gather_points


def _heatmaps(quick):
    """A batch of 224x224 maps with ~150 Gaussian nuclei each (64 maps; 4 when quick)."""
    b = 4 if quick else 64
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(224.0), torch.arange(224.0), indexing="ij")
    maps = 0.05 * torch.rand(b, 224, 224, generator=g)
    centres = torch.rand(b, 150, 2, generator=g) * 224
    for i in range(b):
        for cy, cx in centres[i]:
            maps[i] = torch.maximum(maps[i], torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 8.0))
    return maps


@pytest.fixture(scope="module")
def heatmaps(quick):
    return _heatmaps(quick)


def test_peaks_reference(benchmark, heatmaps):
    out = benchmark(find_peaks, heatmaps, 0.3, 2, 1024)
    assert int(out.counts.sum()) > 0


def test_peaks_scipy_maximum_filter(benchmark, heatmaps):
    maps = heatmaps.numpy()

    def scipy_peaks():
        return [np.argwhere((m == maximum_filter(m, size=5, mode="nearest")) & (m > 0.3)) for m in maps]

    assert sum(len(p) for p in benchmark(scipy_peaks)) > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_point_gather_reference(benchmark, quick, dtype):
    b = 4 if quick else 64
    fmap = torch.randn(b, 384, 56, 56).to(dtype)
    xy = torch.rand(b, 150, 2) * 224
    out = benchmark(gather_points, fmap, xy, (224, 224))
    assert out.shape == (b, 150, 384)
