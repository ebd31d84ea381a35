"""Detection + classification metrics for dot annotations, under two matchers.

- ``greedy_raster_match`` (BRCA-M2C / MCSpatNet protocol): ground-truth points in raster order (row, then column),
  each matched to the nearest still-unmatched prediction at distance strictly below the radius.
- ``hungarian_match``: one-to-one assignment that maximises the number of pairs within the radius and, among those,
  minimises the summed distance (solved per connected component of the radius graph).

:class:`F1Counts` pools TP/FP/FN over images; F1 is computed from the pooled counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree


@dataclass
class F1Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def add(self, n_matched: int, n_pred: int, n_gt: int) -> None:
        self.tp += n_matched
        self.fp += n_pred - n_matched
        self.fn += n_gt - n_matched

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        denom = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / denom if denom else 0.0


def greedy_raster_match(gt: np.ndarray, pred: np.ndarray, radius: float) -> list[tuple[int, int]]:
    """MCSpatNet-style matching: returns (gt_index, pred_index) pairs, distance < ``radius`` (strict)."""
    if len(gt) == 0 or len(pred) == 0:
        return []
    tree = cKDTree(pred)
    taken = np.zeros(len(pred), dtype=bool)
    pairs = []
    for g in np.lexsort((gt[:, 0], gt[:, 1])):  # raster order: by y, then x
        candidates = tree.query_ball_point(gt[g], r=radius)
        best, best_d = -1, np.inf
        for p in candidates:
            d = float(np.hypot(*(pred[p] - gt[g])))
            if not taken[p] and d < radius and (d < best_d or (d == best_d and p < best)):
                best, best_d = p, d
        if best >= 0:
            taken[best] = True
            pairs.append((int(g), best))
    return pairs


def hungarian_match(gt: np.ndarray, pred: np.ndarray, radius: float) -> list[tuple[int, int]]:
    """Maximum one-to-one matching within ``radius`` (inclusive) with minimum total distance."""
    if len(gt) == 0 or len(pred) == 0:
        return []
    close = cKDTree(gt).sparse_distance_matrix(cKDTree(pred), radius, output_type="ndarray")
    if len(close) == 0:
        return []
    gi, pi, dist = close["i"], close["j"], close["v"]
    n = len(gt)
    graph = coo_matrix((np.ones(len(gi)), (gi, n + pi)), shape=(n + len(pred), n + len(pred)))
    _, comp = connected_components(graph, directed=False)
    pairs = []
    for c in np.unique(comp[gi]):
        sel = comp[gi] == c
        g_ids, p_ids = np.unique(gi[sel]), np.unique(pi[sel])
        big = radius * (len(g_ids) + len(p_ids) + 1) + 1.0  # more than any sum of real distances in the component
        cost = np.full((len(g_ids), len(p_ids)), big)
        cost[np.searchsorted(g_ids, gi[sel]), np.searchsorted(p_ids, pi[sel])] = dist[sel]
        rows, cols = linear_sum_assignment(cost)
        for r, c2 in zip(rows, cols):
            if cost[r, c2] <= radius:
                pairs.append((int(g_ids[r]), int(p_ids[c2])))
    return pairs


MATCHERS = {"mcspatnet": greedy_raster_match, "hungarian": hungarian_match}


@dataclass
class DetectionScores:
    detection: F1Counts
    per_class: list[F1Counts]

    @property
    def macro_f1(self) -> float:
        return float(np.mean([c.f1 for c in self.per_class]))

    def as_dict(self) -> dict:
        out = {
            "det_precision": self.detection.precision,
            "det_recall": self.detection.recall,
            "det_f1": self.detection.f1,
            "macro_f1": self.macro_f1,
        }
        for i, c in enumerate(self.per_class):
            out[f"f1_class{i}"] = c.f1
        return out


def score_detections(
    images: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    num_classes: int,
    radius: float,
    matcher: str,
) -> DetectionScores:
    """Pool counts over ``(gt_xy, gt_cls, pred_xy, pred_cls)`` per image; classes matched only within themselves."""
    match = MATCHERS[matcher]
    det, per_class = F1Counts(), [F1Counts() for _ in range(num_classes)]
    for gt_xy, gt_cls, pred_xy, pred_cls in images:
        det.add(len(match(gt_xy, pred_xy, radius)), len(pred_xy), len(gt_xy))
        for c in range(num_classes):
            g, p = gt_xy[gt_cls == c], pred_xy[pred_cls == c]
            per_class[c].add(len(match(g, p, radius)), len(p), len(g))
    return DetectionScores(det, per_class)
