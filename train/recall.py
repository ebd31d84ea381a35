"""Which nuclei a detector misses: class-agnostic detection scores, recall per labelled class and per spacing.

Used on data sets whose classes are not the model's (NuCLS) and on the stress tests: matching is one-to-one
(:func:`train.metrics.hungarian_match`) within a radius in um, whatever the predicted class.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from .metrics import F1Counts, hungarian_match

SPACING_BINS_UM = (0.0, 4.0, 6.0, 8.0, np.inf)  # nearest labelled neighbour; packed gland nuclei sit ~5 um apart


def nearest_neighbour_um(xy: np.ndarray, mpp: float) -> np.ndarray:
    """Distance from each point to its nearest other point, in um (``inf`` for a lone point)."""
    if len(xy) < 2:
        return np.full(len(xy), np.inf)
    d, _ = cKDTree(xy).query(xy, k=2)
    return d[:, 1] * mpp


def detection_report(
    per_image: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    mpp: float,
    class_names: tuple[str, ...],
    radius_um: float = 3.0,
) -> dict:
    """Pooled det P/R/F1 plus recall per labelled class and per nearest-neighbour spacing.

    ``per_image`` holds ``(gt_xy, gt_cls, pred_xy)`` in the same pixels, at ``mpp`` um per pixel.
    """
    det = F1Counts()
    found_cls = np.zeros(len(class_names), np.int64)
    total_cls = np.zeros(len(class_names), np.int64)
    bins = SPACING_BINS_UM
    found_bin = np.zeros(len(bins) - 1, np.int64)
    total_bin = np.zeros(len(bins) - 1, np.int64)
    for gt_xy, gt_cls, pred_xy in per_image:
        pairs = hungarian_match(gt_xy, pred_xy, radius_um / mpp)
        det.add(len(pairs), len(pred_xy), len(gt_xy))
        hit = np.zeros(len(gt_xy), bool)
        hit[[g for g, _ in pairs]] = True
        np.add.at(total_cls, gt_cls, 1)
        np.add.at(found_cls, gt_cls[hit], 1)
        which = np.digitize(nearest_neighbour_um(gt_xy, mpp), bins[1:-1])
        np.add.at(total_bin, which, 1)
        np.add.at(found_bin, which[hit], 1)
    ratio = lambda a, b: float(a / b) if b else float("nan")  # noqa: E731
    spacing = {
        f"{bins[i]:g}-{bins[i + 1]:g} um": {"recall": ratio(found_bin[i], total_bin[i]), "n": int(total_bin[i])}
        for i in range(len(bins) - 1)
    }
    return {
        "det_precision": det.precision,
        "det_recall": det.recall,
        "det_f1": det.f1,
        "n_gt": det.tp + det.fn,
        "n_pred": det.tp + det.fp,
        "recall_per_class": {c: ratio(found_cls[i], total_cls[i]) for i, c in enumerate(class_names)},
        "n_per_class": {c: int(total_cls[i]) for i, c in enumerate(class_names)},
        "recall_by_spacing": spacing,
    }


def format_report_table(rows: dict[str, dict]) -> str:
    """One Markdown row per named report (e.g. per stress test): det P/R/F1, recall per class and per spacing."""
    first = next(iter(rows.values()))
    classes, spacings = list(first["recall_per_class"]), list(first["recall_by_spacing"])
    head = ["det P", "det R", "det F1", "n GT", *(f"R {c}" for c in classes), *(f"R nn {s}" for s in spacings)]
    lines = ["| test | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    for name, r in rows.items():
        cells = [f"{r['det_precision']:.3f}", f"{r['det_recall']:.3f}", f"{r['det_f1']:.3f}", str(r["n_gt"])]
        cells += [f"{r['recall_per_class'][c]:.3f}" for c in classes]
        cells += [f"{r['recall_by_spacing'][s]['recall']:.3f} ({r['recall_by_spacing'][s]['n']})" for s in spacings]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
