"""Every gather implementation within a justified bound of an fp64 oracle, and the launch edge cases (B = 0, K = 0,
channel counts across the block size, channels-last maps, the peaks candidate buffer with and without the host read,
launch grids within CUDA's limits). Triton runs on CPU tensors under TRITON_INTERPRET=1, on CUDA tensors compiled."""

import os

import pytest
import torch
from gather_oracle import check_gather
from peak_checks import assert_same_peaks

import muse_fast.kernels.grid as grid_module
from muse_fast.kernels.grid import MAX_GRID_AXIS12, check_grid, gather_grids, peaks_grids
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


def _triton_device() -> str:
    """Where Triton runs in this process: CPU tensors under the interpreter, CUDA tensors when compiled."""
    pytest.importorskip("triton")
    if os.environ.get("TRITON_INTERPRET") == "1":
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    pytest.skip("compiled Triton (TRITON_INTERPRET=0) needs a CUDA GPU; set TRITON_INTERPRET=1 for the interpreter")


@pytest.mark.parametrize("sync_free", [True, False])
def test_triton_peaks_with_and_without_the_count_read(monkeypatch, sync_free):
    """Small maps never read the counts back; with the read (large maps), an undersized buffer is rerun."""
    device = _triton_device()
    if not sync_free:
        import muse_fast.kernels.peaks.triton as peaks_triton

        monkeypatch.setattr(peaks_triton, "SYNC_FREE_PIXELS", 0)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(3, 31, 45, generator=g)
    for r, border, cap in ((1, 0, 4), (3, 2, 4096), (2, 5, 7)):
        ref = find_peaks(x, 0.2, r, cap, border, impl="reference")
        assert_same_peaks(find_peaks(x.to(device), 0.2, r, cap, border, impl="triton"), ref)


@pytest.mark.parametrize(
    "b,h,w",
    [(1, 8193, 8193), (9, 16384, 16384), (70_000, 56, 56), (1, 46341, 46341)],  # 67.1 M pixels and up
)
def test_peaks_launch_grid_keeps_pixel_blocks_on_axis_0(b, h, w):
    """CUDA caps grid axes 1 and 2 at 65,535: pixel blocks go on axis 0, the batch in chunks on axis 1."""
    launches = peaks_grids(b, h * w, 1024)
    assert all(grid[1] <= MAX_GRID_AXIS12 for _, _, grid in launches)
    assert all(grid[0] * 1024 >= h * w for _, _, grid in launches)
    assert [(s, e) for s, e, _ in launches] == [(s, min(s + MAX_GRID_AXIS12, b)) for s in range(0, b, MAX_GRID_AXIS12)]
    assert all(grid[1] == e - s for s, e, grid in launches)


def test_gather_launch_grid_keeps_point_blocks_on_axis_0():
    for b, k, c in ((1, 2_000_000, 256), (70_000, 150, 256), (3, 0, 1)):
        launches = gather_grids(b, k, c, 16, 64)
        assert all(max(grid[1:]) <= MAX_GRID_AXIS12 and grid[0] * 16 >= k for _, _, grid in launches)
        assert sum(e - s for s, e, _ in launches) == b
    with pytest.raises(ValueError, match="axis 2 has 70000 programs"):
        check_grid((1, 1, 70_000))


def test_triton_launches_in_batch_chunks(monkeypatch):
    """The chunked launches (batches past 65,535 images), shrunk to chunks of 2 images, against the reference."""
    device = _triton_device()
    monkeypatch.setattr(grid_module, "MAX_GRID_AXIS12", 2)
    g = torch.Generator().manual_seed(5)
    x = torch.rand(5, 23, 17, generator=g)
    assert_same_peaks(find_peaks(x.to(device), 0.3, 1, 64, impl="triton"), find_peaks(x, 0.3, 1, 64, impl="reference"))
    fmap = torch.randn(5, 9, 6, 6, generator=g).to(device)
    xy = (torch.rand(5, 7, 2, generator=g) * 24).to(device)
    check_gather(fmap, xy, (24, 24), torch.tensor([7, 0, 3, 7, 1], dtype=torch.int32, device=device), "triton")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gather_reads_channels_last_maps(impl, dtype):
    """The engines hand over channels-last maps (C = 256 for muse_r18): every implementation reads them."""
    g = torch.Generator().manual_seed(7)
    fmap = torch.randn(2, 70, 14, 14, generator=g).to(dtype).to(memory_format=torch.channels_last)
    xy = torch.rand(2, 13, 2, generator=g) * 60 - 2
    check_gather(fmap, xy, (56, 56), torch.tensor([13, 5], dtype=torch.int32), impl)


class _Recorder:
    """Stands in for a Triton kernel: records each launch's arguments, then launches the real kernel."""

    def __init__(self, kernel) -> None:
        self.kernel, self.launches = kernel, []

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.launches.append(args)
            return self.kernel[grid](*args, **kwargs)

        return launch


def test_triton_gather_reads_the_map_in_place(monkeypatch):
    """No copy of the feature map per batch: the kernel gets the caller's storage and its channels-last strides."""
    device = _triton_device()
    import muse_fast.kernels.point_gather.triton as gather_triton

    recorder = _Recorder(gather_triton._gather_fwd)
    monkeypatch.setattr(gather_triton, "_gather_fwd", recorder)
    fmap = torch.randn(4, 256, 14, 14, device=device).to(memory_format=torch.channels_last)
    xy = torch.rand(4, 11, 2, device=device) * 56
    out = gather_points(fmap, xy, (56, 56), None, impl="triton")
    (args,) = recorder.launches
    assert args[0].data_ptr() == fmap.data_ptr() and tuple(args[8:12]) == fmap.stride() == (50176, 1, 3584, 256)
    assert torch.equal(out, gather_points(fmap.contiguous(), xy, (56, 56), None, impl="triton"))
