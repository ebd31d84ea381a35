"""Peak finding against scikit-image's peak_local_max and on the hand-made edge cases of style rule 4."""

import numpy as np
import pytest
import torch
from skimage.feature import peak_local_max

from muse_fast.kernels.peaks import find_peaks


def _peaks(x, *args, impl="reference", **kw):
    return find_peaks(x, *args, impl=impl, **kw)


def _valid(peaks, i):
    n = int(peaks.counts[i])
    return peaks.yx[i, :n].numpy(), peaks.scores[i, :n].numpy()


@pytest.mark.parametrize("shape", [(1, 7, 9), (3, 37, 53), (2, 32, 61), (1, 1, 5)])
@pytest.mark.parametrize("min_distance", [1, 2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_matches_peak_local_max_without_ties(shape, min_distance, dtype):
    """Distinct values (a permutation of integers, exact in fp16 up to 2048), so tie rules cannot differ."""
    g = torch.Generator().manual_seed(shape[1] * 100 + min_distance)
    n = shape[1] * shape[2]
    x = torch.stack([torch.randperm(n, generator=g).reshape(shape[1:]) for _ in range(shape[0])]).to(dtype)
    threshold = 0.3 * n
    peaks = find_peaks(x, threshold=threshold, min_distance=min_distance, max_points=4096)
    for i in range(shape[0]):
        image = x[i].double().numpy()
        ref = peak_local_max(image, min_distance=min_distance, threshold_abs=threshold, exclude_border=False)
        yx, scores = _valid(peaks, i)
        np.testing.assert_array_equal(yx, ref)
        np.testing.assert_array_equal(scores, image[ref[:, 0], ref[:, 1]])


def test_padding_rows_are_untouched(impl):
    x = torch.zeros(1, 9, 9)
    x[0, 4, 4] = 1
    peaks = find_peaks(x, 0.5, 1, max_points=4, impl=impl)
    assert int(peaks.counts[0]) == 1
    assert torch.isnan(peaks.scores[0, 1:]).all() and (peaks.yx[0, 1:] == -1).all()


def test_constant_and_empty_maps_have_no_peaks(impl):
    x = torch.stack([torch.full((8, 8), 0.7), torch.zeros(8, 8), torch.full((8, 8), 0.2)])
    peaks = find_peaks(x, threshold=0.1, min_distance=1, impl=impl)
    assert peaks.counts.tolist() == [0, 0, 0]
    assert peaks.overflow.tolist() == [0, 0, 0]


def test_plateau_keeps_its_first_pixel_in_raster_order(impl):
    x = torch.zeros(1, 10, 10)
    x[0, 3:5, 4:6] = 0.9  # 2x2 plateau
    yx, _ = _valid(find_peaks(x, 0.5, 1, impl=impl), 0)
    assert yx.tolist() == [[3, 4]]


def test_adjacent_equal_peaks_follow_the_documented_tie_rule(impl):
    x = np.zeros((12, 12), np.float32)
    x[5, 5] = x[5, 7] = 1.0  # equal peaks 2 apart
    x[9, 2] = 0.8
    tensor = torch.from_numpy(x)[None]
    # Window radius 1: the two are outside each other's window, both kept (as peak_local_max does).
    assert _valid(find_peaks(tensor, 0.1, 1, impl=impl), 0)[0].tolist() == [[5, 5], [5, 7], [9, 2]]
    # Radius 2 and 3: inside one window, the first in raster order wins.
    for r in (2, 3):
        assert _valid(find_peaks(tensor, 0.1, r, impl=impl), 0)[0].tolist() == [[5, 5], [9, 2]]
    # peak_local_max agrees at radius 3; at radius 2 its spacing test is strict (< r) and keeps both.
    ref = peak_local_max(x, min_distance=3, threshold_abs=0.1, exclude_border=False)
    assert ref.tolist() == [[5, 5], [9, 2]]


def test_equal_neighbours_keep_one(impl):
    x = torch.zeros(1, 6, 6)
    x[0, 2, 2] = x[0, 2, 3] = x[0, 3, 2] = 0.9  # L-shaped tie
    assert _valid(find_peaks(x, 0.1, 1, impl=impl), 0)[0].tolist() == [[2, 2]]


def test_border_peaks_and_exclude_border(impl):
    x = torch.zeros(1, 8, 8)
    x[0, 0, 0], x[0, 7, 3], x[0, 4, 4] = 0.9, 0.8, 0.7
    yx, _ = _valid(find_peaks(x, 0.5, 1, impl=impl), 0)
    assert yx.tolist() == [[0, 0], [7, 3], [4, 4]]
    yx, _ = _valid(find_peaks(x, 0.5, 1, exclude_border=1, impl=impl), 0)
    assert yx.tolist() == [[4, 4]]
    ref = peak_local_max(x[0].numpy(), min_distance=1, threshold_abs=0.5, exclude_border=1)
    assert ref.tolist() == [[4, 4]]


def test_threshold_is_strict(impl):
    x = torch.zeros(1, 5, 5)
    x[0, 2, 2] = 0.5
    assert int(find_peaks(x, 0.5, 1, impl=impl).counts[0]) == 0
    assert int(find_peaks(x, 0.49, 1, impl=impl).counts[0]) == 1


def test_cap_keeps_highest_scores_and_reports_overflow(impl):
    x = torch.zeros(2, 20, 20)
    values = torch.linspace(0.5, 0.9, 25)
    for k, (r, c) in enumerate([(r, c) for r in range(1, 20, 4) for c in range(1, 20, 4)]):
        x[0, r, c] = values[k]
    peaks = find_peaks(x, 0.1, 1, max_points=10, impl=impl)
    yx, scores = _valid(peaks, 0)
    assert peaks.counts.tolist() == [10, 0] and peaks.overflow.tolist() == [15, 0]
    np.testing.assert_allclose(scores, values.flip(0)[:10].numpy(), rtol=1e-6)


def test_known_noisy_peaks_are_found(impl):
    g = torch.Generator().manual_seed(1)
    x = 0.05 * torch.rand(1, 40, 40, generator=g)
    yy, xx = torch.meshgrid(torch.arange(40.0), torch.arange(40.0), indexing="ij")
    spots = [(8, 9), (20, 30), (33, 12)]
    for r, c in spots:
        x[0] += torch.exp(-((yy - r) ** 2 + (xx - c) ** 2) / 4.0)
    yx, _ = _valid(find_peaks(x, 0.5, 2, impl=impl), 0)
    assert sorted(map(tuple, yx.tolist())) == sorted(spots)


@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 7, 9), (3, 37, 53), (1, 33, 97), (2, 57, 61)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("min_distance,exclude_border", [(1, 0), (2, 0), (3, 2)])
def test_implementations_match_the_reference(fast_impl, shape, dtype, min_distance, exclude_border):
    g = torch.Generator().manual_seed(sum(shape) + min_distance)
    x = torch.rand(shape, generator=g)
    x[:, ::5, ::3] = 0.75  # exact ties and small plateaus in every map
    x = x.to(dtype)
    for cap in (4, 4096):  # with overflow, and without
        ref = find_peaks(x, 0.4, min_distance, cap, exclude_border, impl="reference")
        got = find_peaks(x, 0.4, min_distance, cap, exclude_border, impl=fast_impl)
        assert got.counts.tolist() == ref.counts.tolist() and got.overflow.tolist() == ref.overflow.tolist()
        for i in range(shape[0]):
            n = int(ref.counts[i])
            assert torch.equal(got.yx[i, :n], ref.yx[i, :n])
            assert torch.equal(got.scores[i, :n], ref.scores[i, :n])
            assert got.scores.dtype == ref.scores.dtype


def test_constant_plateau_batch_mixed(fast_impl):
    x = torch.zeros(3, 16, 16)
    x[1] = 0.9
    x[2, 4:7, 4:7] = 0.9
    ref = find_peaks(x, 0.5, 2, impl="reference")
    got = find_peaks(x, 0.5, 2, impl=fast_impl)
    assert got.counts.tolist() == ref.counts.tolist() == [0, 0, 1]
    assert torch.equal(got.yx[2, :1], ref.yx[2, :1])
