"""Triton on a real GPU against the reference (skipped without CUDA; run by benchmarks/gpu_check.sh)."""

import os

import pytest
import torch

from muse_fast.kernels.peaks import find_peaks
from muse_fast.kernels.point_gather import gather_points

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1",
    reason="needs a CUDA GPU with compiled Triton (TRITON_INTERPRET=0)",
)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 1, 1), (5, 57, 61), (64, 56, 56), (2, 300, 517)])
def test_cuda_peaks_match_reference(dtype, shape):
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.rand(shape, generator=g)
    x[:, ::5, ::3] = 0.75
    x = x.to(dtype).cuda()
    for cap in (8, 4096):
        ref = find_peaks(x.cpu(), 0.4, 2, cap, impl="reference")
        got = find_peaks(x, 0.4, 2, cap, impl="triton")
        assert got.counts.cpu().tolist() == ref.counts.tolist()
        assert got.overflow.cpu().tolist() == ref.overflow.tolist()
        for i in range(shape[0]):
            n = int(ref.counts[i])
            assert torch.equal(got.yx[i, :n].cpu(), ref.yx[i, :n])
            assert torch.equal(got.scores[i, :n].cpu(), ref.scores[i, :n])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_gather_matches_reference(dtype):
    g = torch.Generator().manual_seed(0)
    fmap = torch.randn(8, 384, 56, 56, generator=g).to(dtype).cuda().requires_grad_(True)
    xy = (torch.rand(8, 150, 2, generator=g) * 232 - 4).cuda()
    counts = torch.randint(0, 151, (8,), generator=g, dtype=torch.int32).cuda()
    ref = gather_points(fmap, xy, (224, 224), counts, impl="reference")
    got = gather_points(fmap, xy, (224, 224), counts, impl="triton")
    tol = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 5e-2}[dtype]
    assert torch.allclose(got.float(), ref.float(), atol=tol, rtol=tol)
    grad_out = torch.randn_like(ref)
    (g_ref,) = torch.autograd.grad(ref, fmap, grad_out)
    (g_got,) = torch.autograd.grad(got, fmap, grad_out)
    assert torch.allclose(g_got.float(), g_ref.float(), atol=4 * tol, rtol=4 * tol)
