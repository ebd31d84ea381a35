"""Scores and the printed table of an adaptation: per-class precision, recall and F1."""

from __future__ import annotations

import unicodedata

import numpy as np

from ..output.text import printable


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


def columns(text: str) -> int:
    """Terminal columns of ``text``: wide (CJK) and full-width letters take two, combining marks none."""
    return sum(
        0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in ("W", "F") else 1 for c in text
    )


def format_report(report: dict) -> str:
    """A short table for the terminal: per-class scores of the classifier saved in the weights, then the summary
    line(s). In full mode that is the classifier fitted on the points outside the held-out regions, unless too few
    were there (then classes mode's, fitted on every point)."""
    cls, full = report["classes"], report.get("full")
    refit = full.get("classifier") if full else None
    saved = refit if refit and "scores" in refit else cls
    scores = saved["scores"]
    names = {n: printable(n) for n in scores["per_class"]}  # a class name is the user's text: no terminal controls
    width = max(8, *(columns(n) for n in names.values()))
    lines = [f"{'class':<{width}}  precision  recall     F1  nuclei"]
    for name, s in scores["per_class"].items():
        cell = names[name] + " " * (width - columns(names[name]))
        lines.append(f"{cell}  {s['precision']:9.3f}  {s['recall']:6.3f}  {s['f1']:5.3f}  {s['support']:6d}")
    where = " on the points outside the held-out regions" if saved is refit else ""
    lines.append(
        f"classifier {saved['chosen']}{where} ({saved['cross_validation']}): agreement {scores['agreement']:.3f}, "
        f"macro F1 {scores['macro_f1']:.3f}; {saved['unmatched_points']} of its annotated points had no detection "
        "within 3 um"
    )
    if full:
        if saved is cls and refit:
            lines.append(f"kept classes mode's classifier: {printable(str(refit.get('kept_own_classifier', '')))}")
        s = full["held_out"][full["chosen"]]
        lines.append(
            f"detection ({full['chosen']}, on {full['held_out_regions']} held-out regions): det F1 {s['det_f1']:.3f}, "
            f"macro F1 {s['macro_f1']:.3f} (base network: det F1 {full['held_out']['base']['det_f1']:.3f})"
        )
    return "\n".join(lines)
