"""Matchers: Hungarian against an independent dense scipy assignment; MCSpatNet protocol on hand-made cases."""

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from muse_fast.train.metrics import F1Counts, greedy_raster_match, hungarian_match, score_detections


def _dense_optimum(gt, pred, radius):
    """Independent oracle: one dense assignment with a prohibitive cost for pairs beyond the radius."""
    d = cdist(gt, pred)
    cost = np.where(d <= radius, d, 1e6)
    r, c = linear_sum_assignment(cost)
    ok = d[r, c] <= radius
    return int(ok.sum()), float(d[r, c][ok].sum())


@pytest.mark.parametrize("seed", range(8))
def test_hungarian_matches_dense_assignment(seed):
    rng = np.random.default_rng(seed)
    gt = rng.uniform(0, 80, size=(int(rng.integers(1, 60)), 2))
    pred = np.concatenate(
        [
            gt[: len(gt) // 2] + rng.normal(0, 3, size=(len(gt) // 2, 2)),
            rng.uniform(0, 80, size=(int(rng.integers(0, 40)), 2)),
        ]
    )
    pairs = hungarian_match(gt, pred, 6.0)
    n, total = _dense_optimum(gt, pred, 6.0)
    assert len(pairs) == n
    assert np.isclose(sum(np.hypot(*(gt[g] - pred[p])) for g, p in pairs), total)
    assert len({g for g, _ in pairs}) == len(pairs) == len({p for _, p in pairs})


def test_hungarian_beats_greedy_on_a_chain():
    gt = np.array([[0.0, 0.0], [5.0, 0.0]])
    pred = np.array([[3.0, 0.0], [-3.0, 0.0]])
    # greedy (raster order) gives gt0 its nearest, pred0 at 3 px, leaving gt1 with nothing within 6 px strict
    assert greedy_raster_match(gt, pred, 6.0) == [(0, 0)]
    assert sorted(hungarian_match(gt, pred, 6.0)) == [(0, 1), (1, 0)]


def test_mcspatnet_radius_is_strict_and_raster_ordered():
    gt = np.array([[10.0, 10.0], [16.0, 10.0]])
    assert greedy_raster_match(gt[:1], np.array([[16.0, 10.0]]), 6.0) == []  # exactly 6 px: no match
    pred = np.array([[13.0, 10.0]])  # equidistant (3 px) from both; first GT in raster order takes it
    assert greedy_raster_match(gt, pred, 6.0) == [(0, 0)]
    gt_rows = np.array([[50.0, 21.0], [10.0, 20.0]])  # second row is earlier in raster order (smaller y)
    assert greedy_raster_match(gt_rows, np.array([[30.0, 20.5]]), 25.0) == [(1, 0)]


def test_empty_inputs():
    assert greedy_raster_match(np.zeros((0, 2)), np.ones((3, 2)), 6) == []
    assert hungarian_match(np.ones((3, 2)), np.zeros((0, 2)), 6) == []
    assert hungarian_match(np.array([[0.0, 0.0]]), np.array([[50.0, 50.0]]), 6) == []


def test_scores_pool_counts_and_match_within_classes():
    gt_xy = np.array([[10.0, 10.0], [50.0, 50.0], [90.0, 90.0]])
    gt_cls = np.array([0, 1, 1])
    pred_xy = np.array([[11.0, 10.0], [50.0, 52.0], [200.0, 200.0]])
    pred_cls = np.array([0, 0, 1])  # second prediction has the wrong class
    s = score_detections([(gt_xy, gt_cls, pred_xy, pred_cls)] * 2, 2, 6.0, "hungarian")
    assert (s.detection.tp, s.detection.fp, s.detection.fn) == (4, 2, 2)
    assert (s.per_class[0].tp, s.per_class[0].fp, s.per_class[0].fn) == (2, 2, 0)
    assert (s.per_class[1].tp, s.per_class[1].fp, s.per_class[1].fn) == (0, 2, 4)
    assert np.isclose(s.macro_f1, (F1Counts(2, 2, 0).f1 + 0.0) / 2)
