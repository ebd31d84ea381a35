"""Kernels: peak finding (reference, numba, native, scipy's maximum_filter approach, and ``torch_topk``, the
vectorised PyTorch baseline of ``torch_topk.py``; Triton and native on GPU) and the point gather. ``native`` is the
CMake-built csrc/ library (skipped when not built). The per-image ``reference`` is the oracle; speed-ups are stated
against ``torch_topk``.

Realistic sizes: a batch of 64 heatmaps of 224x224 with ~150 nuclei each; for the gather, features C=384 at stride 4
(56x56), and on the GPU the engines' layout (muse_r18: C=256, channels-last). ``MUSE_BENCH_QUICK=1`` uses 4 maps.
"""

import importlib.util

import numpy as np
import pytest
import torch
from scipy.ndimage import maximum_filter
from torch_topk import find_peaks_topk

from muse_fast.kernels.peaks import find_peaks
from muse_fast.kernels.point_gather import gather_points

CUDA = torch.cuda.is_available()


def _heatmaps(batch: int, device: str = "cpu") -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(224.0), torch.arange(224.0), indexing="ij")
    maps = 0.05 * torch.rand(batch, 224, 224, generator=g)
    centres = torch.rand(batch, 150, 2, generator=g) * 224
    for i in range(batch):
        d2 = (yy[None] - centres[i, :, 0, None, None]) ** 2 + (xx[None] - centres[i, :, 1, None, None]) ** 2
        maps[i] = torch.maximum(maps[i], torch.exp(-d2 / 8.0).amax(0))
    return maps.to(device)


@pytest.fixture(scope="module")
def heatmaps(quick):
    return _heatmaps(4 if quick else 64)


def _need(module):
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} not installed")


def _need_native(device: str):
    from muse_fast.kernels.native import unavailable_reason

    if reason := unavailable_reason(device):
        pytest.skip(reason)


def _peaks(heat, threshold, radius, cap, impl):
    """``find_peaks`` of one implementation, or the vectorised baseline (``impl="torch_topk"``)."""
    if impl == "torch_topk":
        return find_peaks_topk(heat, threshold, radius, cap)
    return find_peaks(heat, threshold, radius, cap, impl=impl)


def _same_peaks(got, ref) -> bool:
    counts = got.counts.cpu()
    same = torch.equal(counts, ref.counts.cpu()) and torch.equal(got.overflow.cpu(), ref.overflow.cpu())
    return same and all(torch.equal(got.yx[i, :n].cpu(), ref.yx[i, :n].cpu()) for i, n in enumerate(counts.tolist()))


@pytest.mark.parametrize("impl", ["reference", "torch_topk", "numba", "native"])
def test_peaks_cpu(benchmark, heatmaps, impl):
    if impl == "native":
        _need_native("cpu")
    if impl == "numba":
        _need("numba")
    # compile outside the timing, at full size (it picks the kernel); same peaks as the reference
    assert _same_peaks(_peaks(heatmaps, 0.3, 2, 1024, impl), find_peaks(heatmaps, 0.3, 2, 1024, impl="reference"))
    out = benchmark(_peaks, heatmaps, 0.3, 2, 1024, impl)
    benchmark.extra_info["maps"] = len(heatmaps)
    assert int(out.counts.sum()) > 0


def test_peaks_scipy_maximum_filter(benchmark, heatmaps):
    maps = heatmaps.numpy()

    def scipy_peaks():
        return [np.argwhere((m == maximum_filter(m, size=5, mode="nearest")) & (m > 0.3)) for m in maps]

    assert sum(len(p) for p in benchmark(scipy_peaks)) > 0


@pytest.mark.parametrize("impl", ["reference", "numba", "native"])
def test_point_gather_cpu(benchmark, quick, impl):
    if impl == "native":
        _need_native("cpu")
    if impl == "numba":
        _need("numba")
    b = 4 if quick else 64
    fmap = torch.randn(b, 384, 56, 56)
    xy = torch.rand(b, 150, 2) * 224
    gather_points(fmap, xy, (224, 224), impl=impl)  # warm-up at full size: the size picks the kernel
    out = benchmark(gather_points, fmap, xy, (224, 224), impl=impl)
    assert out.shape == (b, 150, 384)


def _peaks_then_gather(heat, fmap, impl):
    peaks = _peaks(heat, 0.3, 1, 512, impl)
    xy = 4.0 * peaks.yx.flip(-1).float()
    out = gather_points(fmap, xy, (224, 224), peaks.counts, impl="reference" if impl == "torch_topk" else impl)
    if heat.is_cuda:
        torch.cuda.synchronize()
    return out


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("impl", ["reference", "torch_topk", "triton", "native"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_peaks_and_gather_gpu(benchmark, impl, dtype):
    """Heatmap -> points -> point features on the GPU (the inference path after the network), in the engines'
    layout: channels-last feature maps of C=256 (muse_r18)."""
    if impl == "triton":
        _need("triton")
    if impl == "native":
        _need_native("cuda")
    heat = _heatmaps(64, "cuda")[:, ::4, ::4].contiguous()  # stride-4 maps, as the network produces
    fmap = torch.randn(64, 256, 56, 56, device="cuda", dtype=dtype).to(memory_format=torch.channels_last)
    ref = _peaks_then_gather(heat, fmap, "reference")
    got = _peaks_then_gather(heat, fmap, impl)
    assert torch.allclose(got.float(), ref.float(), atol=2e-2, rtol=2e-2)  # bf16: one ulp apart
    out = benchmark(_peaks_then_gather, heat, fmap, impl)
    assert out.shape[0] == 64
