"""The native CUDA library (csrc/cuda.cu, the TensorRT plugin's kernels) on a GPU, against the PyTorch references
and the fp64 gather oracle: shapes across the block sizes, dtypes, radii and borders, caps with overflow, the fused
decode against the CPU library (one header, the same results), B = 0 / K = 0, determinism, no host syncs.

Skipped without a CUDA GPU or without libmuse_native_cuda.so; benchmarks/gpu_check.sh builds it and runs this file.
"""

import pytest
import torch
from gather_oracle import check_gather
from peak_checks import assert_same_peaks, tied_maps

from muse_fast.kernels import native
from muse_fast.kernels.nuclei_decode import DecodeParams
from muse_fast.kernels.nuclei_decode import native as decode_native
from muse_fast.kernels.peaks import find_peaks
from muse_fast.kernels.point_gather import gather_points

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def cuda_lib():
    if reason := native.unavailable_reason("cuda"):
        pytest.skip(f"native CUDA library not built: {reason}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 1, 9), (5, 57, 61), (64, 56, 56), (2, 300, 517)])
@pytest.mark.parametrize("radius,border", [(0, 0), (1, 0), (2, 0), (3, 0), (1, 3), (3, 5)])
def test_cuda_peaks_match_reference(dtype, shape, radius, border):
    x = tied_maps(shape, dtype)
    for cap in (8, 4096):
        ref = find_peaks(x.cpu(), 0.4, radius, cap, border, impl="reference")
        assert_same_peaks(find_peaks(x, 0.4, radius, cap, border, impl="native"), ref)


def test_cuda_peaks_constant_and_spike_maps():
    x = torch.zeros(4, 33, 47, device="cuda")
    x[1] = 0.9  # constant: no peak
    x[2, 0, 46] = 0.8  # a corner spike
    x[3, 10:13, 20:24] = 0.6  # a plateau: its first pixel
    got = find_peaks(x, 0.5, 2, 16, impl="native")
    assert got.counts.cpu().tolist() == [0, 0, 1, 1]
    assert got.yx[2, 0].tolist() == [0, 46] and got.yx[3, 0].tolist() == [10, 20]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("b,c,k", [(8, 384, 150), (4, 1, 7), (3, 65, 40), (5, 192, 200), (2, 130, 1)])
def test_cuda_gather_within_fp64_bound(dtype, b, c, k):
    g = torch.Generator().manual_seed(b * c + k)
    fmap = torch.randn(b, c, 56, 56, generator=g).to(dtype).cuda()
    xy = (torch.rand(b, k, 2, generator=g) * 232 - 4).cuda()
    counts = torch.randint(0, k + 1, (b,), generator=g, dtype=torch.int32).cuda()
    check_gather(fmap, xy, (224, 224), counts, "native")
    check_gather(fmap.to(memory_format=torch.channels_last), xy, (224, 224), None, "native")


def test_cuda_fused_decode_equals_the_cpu_library():
    """One header for both: peaks, positions and counts identical; features within float rounding."""
    g = torch.Generator().manual_seed(3)
    heat = torch.rand(16, 56, 56, generator=g)
    heat[:, ::4, ::3] = 0.8
    offsets, fmap = torch.rand(16, 2, 56, 56, generator=g), torch.randn(16, 192, 56, 56, generator=g)
    for cap in (64, 784):
        p = DecodeParams(0.3, 1, cap, 0, 4, (224, 224))
        cpu = decode_native(heat, offsets, fmap, p)
        gpu = decode_native(heat.cuda(), offsets.cuda(), fmap.cuda(), p)
        for name in ("xy", "scores", "counts", "overflow"):
            assert torch.equal(getattr(gpu, name).cpu(), getattr(cpu, name)), name
        assert torch.allclose(gpu.feats.cpu(), cpu.feats, atol=1e-5)


def test_cuda_empty_batches_and_point_sets():
    for b, k in ((0, 5), (3, 0), (0, 0)):
        fmap = torch.randn(b, 65, 8, 8, device="cuda", requires_grad=True)
        out = gather_points(fmap, torch.zeros(b, k, 2, device="cuda"), (32, 32), None, impl="native")
        assert out.shape == (b, k, 65)
        out.sum().backward()
        assert not fmap.grad.any()
    assert find_peaks(torch.rand(0, 56, 56, device="cuda"), 0.5, 1, 16, impl="native").counts.shape == (0,)


def test_cuda_runs_are_deterministic_and_sync_free():
    heat = tied_maps((64, 56, 56), torch.float32, seed=1)
    fmap = torch.randn(64, 192, 56, 56, device="cuda")
    first = None
    for _ in range(3):
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")  # a hidden device -> host copy raises
        try:
            peaks = find_peaks(heat, 0.3, 1, 512, impl="native")
            feats = gather_points(fmap, 4.0 * peaks.yx.flip(-1).float(), (224, 224), peaks.counts, impl="native")
        finally:
            torch.cuda.set_sync_debug_mode("default")
        now = (peaks.yx, peaks.scores, peaks.counts, feats)
        first = first or now
        assert all(torch.equal(a, b) for a, b in zip(first, now))
