"""Scores and the printed table of an adaptation: per-class precision, recall and F1."""

from __future__ import annotations

import numpy as np


def class_scores(pred: np.ndarray, labels: np.ndarray, names: tuple[str, ...]) -> dict:
    """Agreement (top-1), balanced accuracy, macro F1 and per-class precision / recall / F1 / support."""
    k = len(names)
    confusion = np.bincount(labels * k + pred, minlength=k * k).reshape(k, k)
    tp = np.diag(confusion).astype(np.float64)
    support, predicted = confusion.sum(1), confusion.sum(0)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=precision + recall > 0)
    per_class = {
        n: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for n, p, r, f, s in zip(names, precision, recall, f1, support)
    }
    return {
        "agreement": float(tp.sum() / max(len(labels), 1)),
        "balanced_accuracy": float(recall[support > 0].mean()) if (support > 0).any() else 0.0,
        "macro_f1": float(f1.mean()),
        "per_class": per_class,
    }


def format_report(report: dict) -> str:
    """A short table for the terminal: per-class scores of the chosen classifier, then the summary line(s)."""
    cls = report["classes"]
    scores = cls["scores"]
    width = max(8, *(len(n) for n in scores["per_class"]))
    lines = [f"{'class':<{width}}  precision  recall     F1  nuclei"]
    for name, s in scores["per_class"].items():
        lines.append(f"{name:<{width}}  {s['precision']:9.3f}  {s['recall']:6.3f}  {s['f1']:5.3f}  {s['support']:6d}")
    lines.append(
        f"classifier {cls['chosen']} ({cls['cross_validation']}): agreement {scores['agreement']:.3f}, "
        f"macro F1 {scores['macro_f1']:.3f}; {cls['unmatched_points']} annotated points had no detection within 3 um"
    )
    full = report.get("full")
    if full:
        s = full["held_out"][full["chosen"]]
        lines.append(
            f"detection ({full['chosen']}, on {full['held_out_regions']} held-out regions): det F1 {s['det_f1']:.3f}, "
            f"macro F1 {s['macro_f1']:.3f} (base network: det F1 {full['held_out']['base']['det_f1']:.3f})"
        )
    return "\n".join(lines)
