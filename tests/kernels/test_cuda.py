"""Compiled Triton on a real GPU against the reference and the fp64 oracle (skipped without CUDA; run by
benchmarks/gpu_check.sh): shapes and radii, border exclusion, channel counts across the block, channels-last maps,
B = 0 and K = 0, offsets past 2**31 elements and maps past 67 M pixels (more pixel blocks than grid axes 1-2 allow),
run-to-run determinism and a device decode without hidden host syncs."""

import os

import pytest
import torch
from gather_oracle import check_gather
from peak_checks import assert_same_peaks, tied_maps

from muse_fast.kernels.peaks import find_peaks
from muse_fast.kernels.point_gather import gather_points

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1",
    reason="needs a CUDA GPU with compiled Triton (TRITON_INTERPRET=0)",
)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 1, 1), (5, 57, 61), (64, 56, 56), (2, 300, 517)])
@pytest.mark.parametrize("radius,border", [(1, 0), (2, 0), (3, 0), (1, 3), (3, 5)])
def test_cuda_peaks_match_reference(dtype, shape, radius, border):
    x = tied_maps(shape, dtype)
    for cap in (8, 4096):
        ref = find_peaks(x.cpu(), 0.4, radius, cap, border, impl="reference")
        assert_same_peaks(find_peaks(x, 0.4, radius, cap, border, impl="triton"), ref)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])  # the engines': channels-last
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("b,c,k", [(8, 384, 150), (4, 1, 7), (4, 3, 33), (3, 65, 40), (5, 256, 200), (2, 130, 1)])
def test_cuda_gather_within_fp64_bound(dtype, b, c, k, layout):
    """Both the reference and Triton against fp64 (they may differ from each other by twice the bound)."""
    g = torch.Generator().manual_seed(b * c + k)
    fmap = torch.randn(b, c, 56, 56, generator=g).to(dtype).cuda().to(memory_format=layout)
    xy = (torch.rand(b, k, 2, generator=g) * 232 - 4).cuda()
    counts = torch.randint(0, k + 1, (b,), generator=g, dtype=torch.int32).cuda()
    for impl in ("reference", "triton"):
        check_gather(fmap, xy, (224, 224), counts, impl)


def test_cuda_empty_batches_and_point_sets():
    for b, k in ((0, 5), (3, 0), (0, 0)):
        fmap = torch.randn(b, 65, 8, 8, device="cuda", requires_grad=True)
        out = gather_points(fmap, torch.zeros(b, k, 2, device="cuda"), (32, 32), None, impl="triton")
        assert out.shape == (b, k, 65)
        out.sum().backward()
        assert not fmap.grad.any()
    peaks = find_peaks(torch.rand(0, 56, 56, device="cuda"), 0.5, 1, 16, impl="triton")
    assert peaks.counts.shape == (0,)


def _need_memory(gib: float) -> None:
    free, _ = torch.cuda.mem_get_info()
    if free < gib * 2**30:
        pytest.skip(f"needs {gib} GiB of free GPU memory, {free / 2**30:.1f} GiB free")


def test_cuda_gather_offsets_past_int32():
    """A bf16 map of 3 x 4 x 16384^2 = 3.2e9 elements: the last image starts past 2**31; check it alone."""
    _need_memory(16)
    fmap = torch.empty(3, 4, 16384, 16384, dtype=torch.bfloat16, device="cuda")
    fmap[2].copy_(torch.randn(4, 16384, 16384, device="cuda"))
    xy = torch.rand(3, 64, 2, device="cuda") * 65536
    got = gather_points(fmap, xy, (65536, 65536), None, impl="triton")[2:]
    ref = gather_points(fmap[2:], xy[2:], (65536, 65536), None, impl="reference")
    assert torch.allclose(got.float(), ref.float(), atol=2e-2, rtol=2e-2)  # bf16 storage: one bf16 ulp apart
    del fmap


def test_cuda_peaks_offsets_past_int32():
    """9 maps of 16384^2 = 2.4e9 pixels; isolated spikes in the last map (which starts past 2**31)."""
    _need_memory(24)
    x = torch.zeros(9, 16384, 16384, dtype=torch.float16, device="cuda")
    spots = torch.tensor([[5, 7], [16000, 3], [8191, 16383], [12345, 678]], device="cuda")
    x[8, spots[:, 0], spots[:, 1]] = torch.tensor([0.9, 0.8, 0.7, 0.6], dtype=torch.float16, device="cuda")
    got = find_peaks(x, 0.5, 1, 16, impl="triton")
    assert got.counts.cpu().tolist() == [0] * 8 + [4]
    assert got.yx[8, :4].cpu().tolist() == spots.cpu().tolist()


def test_cuda_runs_are_deterministic():
    """Peaks and the forward gather are bitwise identical run to run (only the backward uses atomics)."""
    heat = tied_maps((64, 56, 56), torch.float32, seed=1)
    fmap = torch.randn(64, 192, 56, 56, device="cuda", dtype=torch.bfloat16)
    first = None
    for _ in range(3):
        peaks = find_peaks(heat, 0.3, 1, 512, impl="triton")
        xy = 4.0 * peaks.yx.flip(-1).float()
        feats = gather_points(fmap, xy, (224, 224), peaks.counts, impl="triton")
        now = (peaks.yx, peaks.scores, peaks.counts, feats)
        if first is None:
            first = now
        assert all(torch.equal(a, b) for a, b in zip(first, now))


def test_cuda_device_decode_has_no_host_sync():
    """``decode_packed`` queues everything without a device -> host sync (sync debug mode raises on one)."""
    from muse_fast.model.weights import load_weights
    from muse_fast.post.decode import DecodeConfig
    from muse_fast.post.device_decode import decode_packed

    classifier = load_weights()[0].classifier.cuda().eval()
    dim = next(m for m in classifier.modules() if isinstance(m, torch.nn.LayerNorm)).normalized_shape[0]
    centre = torch.randn(16, 3, 56, 56, device="cuda") * 3
    fmap = torch.randn(16, dim, 56, 56, device="cuda", dtype=torch.float16)
    decode_packed(centre, fmap, classifier, (224, 224), 4, DecodeConfig(), 256)  # compile outside the check
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        packed = decode_packed(centre, fmap, classifier, (224, 224), 4, DecodeConfig(), 256)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert packed.shape == (16, 1 + 5 * 256)
