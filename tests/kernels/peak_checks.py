"""Helpers shared by the peak tests of the GPU and native backends."""

import torch


def tied_maps(shape, dtype, seed=0, device="cuda"):
    """Random maps with plateaus and equal neighbours on a grid (they exercise the tie rule)."""
    g = torch.Generator().manual_seed(seed + sum(shape))
    x = torch.rand(shape, generator=g)
    x[:, ::5, ::3] = 0.75
    return x.to(dtype).to(device)


def assert_same_peaks(got, ref):
    """Counts, overflow and every kept row (position and score) identical, on any devices."""
    assert got.counts.cpu().tolist() == ref.counts.cpu().tolist()
    assert got.overflow.cpu().tolist() == ref.overflow.cpu().tolist()
    for i in range(len(ref.counts)):
        n = int(ref.counts[i])
        assert torch.equal(got.yx[i, :n].cpu(), ref.yx[i, :n].cpu())
        assert torch.equal(got.scores[i, :n].cpu(), ref.scores[i, :n].cpu())
