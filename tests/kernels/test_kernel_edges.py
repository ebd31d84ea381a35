"""Every gather implementation within a justified bound of an fp64 oracle, and the launch edge cases (B = 0, K = 0,
channel counts across the block size, the peaks candidate buffer with and without the host read)."""

import pytest
import torch
from gather_oracle import check_gather

import muse_fast.kernels.peaks.triton as peaks_triton
from muse_fast.kernels.peaks import find_peaks
from muse_fast.kernels.point_gather import gather_points


@pytest.mark.parametrize("c", [1, 3, 65, 130])  # the Triton block is 64 channels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_gather_within_the_fp64_bound(impl, c, dtype):
    g = torch.Generator().manual_seed(c)
    fmap = torch.randn(3, c, 14, 14, generator=g).to(dtype)
    xy = torch.rand(3, 21, 2, generator=g) * 64 - 4  # some outside the 56 x 56 input
    counts = torch.tensor([21, 0, 9], dtype=torch.int32)
    check_gather(fmap, xy, (56, 56), counts, impl)


def test_the_bound_catches_a_one_cell_shift():
    fmap = torch.randn(1, 4, 14, 14, generator=torch.Generator().manual_seed(0))
    xy = torch.rand(1, 9, 2, generator=torch.Generator().manual_seed(1)) * 50
    with pytest.raises(AssertionError, match="forward"):
        check_gather(fmap, xy, (56, 56), None, "reference_shifted")


@pytest.fixture(autouse=True)
def shifted_reference(monkeypatch):
    """A deliberately wrong implementation (points moved by one input pixel), to prove the bound is tight enough."""
    import muse_fast.kernels.point_gather as pg
    from muse_fast.kernels.registry import KernelImpl

    impls = dict(pg.IMPLEMENTATIONS)
    impls["reference_shifted"] = KernelImpl("reference_shifted", "gather_oracle_shift", None, "any")
    monkeypatch.setattr(pg, "IMPLEMENTATIONS", impls)


def test_empty_batches_and_point_sets(impl):
    for b, k in ((0, 5), (2, 0), (0, 0)):
        fmap = torch.randn(b, 7, 6, 6, requires_grad=True)
        out = gather_points(fmap, torch.zeros(b, k, 2), (24, 24), torch.zeros(b, dtype=torch.int32), impl=impl)
        assert out.shape == (b, k, 7)
        out.sum().backward()
        assert fmap.grad.shape == fmap.shape and not fmap.grad.any()
    peaks = find_peaks(torch.rand(0, 9, 9), 0.5, 1, 16, impl=impl)
    assert peaks.counts.shape == (0,) and peaks.yx.shape == (0, 16, 2)


@pytest.mark.parametrize("sync_free", [True, False])
def test_triton_peaks_with_and_without_the_count_read(monkeypatch, sync_free):
    """Small maps never read the counts back; with the read (large maps), an undersized buffer is rerun."""
    pytest.importorskip("triton")
    if not sync_free:
        monkeypatch.setattr(peaks_triton, "SYNC_FREE_PIXELS", 0)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(3, 31, 45, generator=g)
    for r, border, cap in ((1, 0, 4), (3, 2, 4096), (2, 5, 7)):
        ref = find_peaks(x, 0.2, r, cap, border, impl="reference")
        got = find_peaks(x, 0.2, r, cap, border, impl="triton")
        assert got.counts.tolist() == ref.counts.tolist() and got.overflow.tolist() == ref.overflow.tolist()
        for i in range(3):
            n = int(ref.counts[i])
            assert torch.equal(got.yx[i, :n], ref.yx[i, :n]) and torch.equal(got.scores[i, :n], ref.scores[i, :n])


def test_triton_interpreter_is_the_default_only_without_a_gpu(monkeypatch):
    """tests/ and benchmarks/ conftests: compiled Triton on a GPU machine, the interpreter elsewhere."""
    from muse_fast.kernels.registry import triton_interpret_default

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert triton_interpret_default() == "0"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert triton_interpret_default() == "1"
