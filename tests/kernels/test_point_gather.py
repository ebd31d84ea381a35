"""Point gather: the official grid_sample convention, exact bilinear values, zeros outside, gradients."""

import pytest
import torch

from muse_fast.kernels.point_gather import gather_points


def test_official_convention_at_corners_and_centre():
    fmap = torch.arange(2 * 5 * 5, dtype=torch.float64).reshape(1, 2, 5, 5)
    size = 20  # input pixels; feature map is 5x5 (stride 4)
    xy = torch.tensor([[[0.0, 0.0], [20.0, 20.0], [10.0, 10.0], [5.0, 0.0]]], dtype=torch.float64)
    out = gather_points(fmap, xy, (size, size))
    # align_corners=True: input pixel x maps to feature coordinate x * (5 - 1) / 20
    assert out.shape == (1, 4, 2)
    assert torch.allclose(out[0, 0], fmap[0, :, 0, 0])
    assert torch.allclose(out[0, 1], fmap[0, :, 4, 4])
    assert torch.allclose(out[0, 2], fmap[0, :, 2, 2])
    assert torch.allclose(out[0, 3], fmap[0, :, 0, 1])  # x=5 -> feature x=1.0


def test_bilinear_between_cells_and_zero_padding_outside():
    fmap = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    fmap[0, 0, 1, 1] = 1.0
    size = 12  # feature coordinate = x * 2 / 12
    xy = torch.tensor([[[4.5, 6.0], [6.0, 6.0], [-30.0, 6.0], [6.0, 40.0]]], dtype=torch.float64)
    out = gather_points(fmap, xy, (size, size))[0, :, 0]
    assert torch.allclose(out[0], torch.tensor(0.75, dtype=torch.float64))  # 0.75 of the way to cell 1
    assert out[1] == 1.0 and out[2] == 0.0 and out[3] == 0.0


def test_non_square_inputs_scale_each_axis():
    fmap = torch.randn(1, 3, 4, 8, dtype=torch.float64)
    xy = torch.tensor([[[32.0, 16.0]]], dtype=torch.float64)  # right edge, bottom edge of a 16x32 input
    out = gather_points(fmap, xy, (16, 32))
    assert torch.allclose(out[0, 0], fmap[0, :, 3, 7])


def test_empty_point_set():
    out = gather_points(torch.randn(2, 5, 6, 6), torch.zeros(2, 0, 2), (24, 24))
    assert out.shape == (2, 0, 5)


def test_gradcheck_reference():
    g = torch.Generator().manual_seed(0)
    fmap = torch.randn(2, 3, 5, 6, dtype=torch.float64, generator=g, requires_grad=True)
    xy = torch.rand(2, 7, 2, dtype=torch.float64, generator=g) * torch.tensor([24.0, 20.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda f: gather_points(f, xy, (20, 24), impl="reference"), (fmap,))


TOL = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 5e-2, torch.float64: 1e-5}


def test_dtypes_follow_the_feature_map(impl):
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        fmap = torch.randn(1, 4, 6, 6).to(dtype)
        out = gather_points(fmap, torch.tensor([[[3.0, 7.0]]]), (24, 24), impl=impl)
        assert out.dtype == dtype
        ref = gather_points(fmap.double(), torch.tensor([[[3.0, 7.0]]]), (24, 24), impl="reference")
        assert torch.allclose(out.double(), ref, atol=TOL[dtype])


@pytest.mark.parametrize("b,c,h,w,k", [(1, 1, 1, 1, 1), (2, 5, 7, 9, 13), (3, 70, 14, 14, 33), (1, 130, 9, 5, 3)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_implementations_match_the_reference(fast_impl, b, c, h, w, k, dtype):
    g = torch.Generator().manual_seed(b * 1000 + c + k)
    in_h, in_w = 4 * h, 4 * w
    fmap = torch.randn(b, c, h, w, generator=g).to(dtype).requires_grad_(True)
    xy = torch.rand(b, k, 2, generator=g) * torch.tensor([in_w + 8.0, in_h + 8.0]) - 4.0  # some outside
    xy[:, 0] = torch.tensor([0.0, 0.0])
    if k > 1:
        xy[:, 1] = torch.tensor([float(in_w), float(in_h)])  # far corner, exactly on the border
    counts = torch.randint(0, k + 1, (b,), generator=g, dtype=torch.int32)
    ref = gather_points(fmap, xy, (in_h, in_w), counts, impl="reference")
    got = gather_points(fmap, xy, (in_h, in_w), counts, impl=fast_impl)
    assert got.shape == ref.shape and got.dtype == ref.dtype
    assert torch.allclose(got.float(), ref.float(), atol=TOL[dtype], rtol=TOL[dtype])
    grad_out = torch.randn(ref.shape, generator=g).to(dtype)
    (g_ref,) = torch.autograd.grad(ref, fmap, grad_out)
    (g_got,) = torch.autograd.grad(got, fmap, grad_out)
    assert g_got.dtype == dtype
    assert torch.allclose(g_got.float(), g_ref.float(), atol=4 * TOL[dtype], rtol=4 * TOL[dtype])


def test_padding_rows_are_zero(impl):
    fmap = torch.randn(2, 3, 4, 4)
    xy = torch.full((2, 5, 2), 6.0)
    out = gather_points(fmap, xy, (16, 16), torch.tensor([2, 0], dtype=torch.int32), impl=impl)
    assert (out[0, 2:] == 0).all() and (out[1] == 0).all() and (out[0, :2] != 0).any()


@pytest.mark.parametrize("channels_last", [False, True])
def test_a_bf16_map_gives_unrounded_fp32_features_when_asked(impl, channels_last):
    """``out_dtype=torch.float32``: the fp32 sum of the bf16 values, as from the map converted to fp32 first (the
    native kernel reads the bf16 map itself; channels-last is the compiled engine's layout)."""
    g = torch.Generator().manual_seed(5)
    fmap = torch.randn(2, 40, 14, 14, generator=g).to(torch.bfloat16)
    if channels_last:
        fmap = fmap.contiguous(memory_format=torch.channels_last)
    xy = torch.rand(2, 17, 2, generator=g) * 60.0 - 2.0
    counts = torch.tensor([17, 9], dtype=torch.int32)
    got = gather_points(fmap, xy, (56, 56), counts, impl=impl, out_dtype=torch.float32)
    want = gather_points(fmap.float(), xy, (56, 56), counts, impl=impl)
    assert got.dtype == torch.float32 and torch.equal(got, want)
    rounded = gather_points(fmap, xy, (56, 56), counts, impl=impl)
    assert rounded.dtype == torch.bfloat16 and not torch.equal(rounded.float(), got)  # what fp32 keeps
    leaf = fmap.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(
        gather_points(leaf, xy, (56, 56), counts, impl=impl, out_dtype=torch.float32).sum(), leaf
    )
    assert grad.dtype == torch.bfloat16 and grad.shape == fmap.shape
