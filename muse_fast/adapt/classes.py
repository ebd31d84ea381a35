"""``--mode classes``: a new point classifier for the user's classes on the base network's point features.

Two candidates, both in the shipped classifier's shape (LayerNorm, Linear to 256, GELU, Linear to the classes), so
the result is an ordinary weights file: ``linear`` keeps the base classifier's first layers and learns only the
last (a linear classifier on its 256-d hidden features); ``mlp`` fine-tunes the whole classifier from the base.
Both are trained with class-balanced cross-entropy; cross-validation (folds over inputs when there are 3 or more,
else class-stratified folds over points) picks the one with the higher macro F1, which is then fitted on all points.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..model.heads import PointClassifier
from ..train.losses.point_class import class_weights
from .detect import PointFeatures
from .report import class_scores


@dataclass(frozen=True)
class Candidate:
    kind: str  # "linear" (last layer only) or "mlp" (the whole classifier)
    lr: float
    weight_decay: float


@dataclass(frozen=True)
class ClassesConfig:
    folds: int = 5
    steps: int = 300  # full-batch AdamW steps per fit
    min_per_class: int = 5  # matched nuclei per class that cross-validation needs
    seed: int = 2025
    candidates: tuple[Candidate, ...] = (Candidate("linear", 1e-2, 1e-4), Candidate("mlp", 2e-3, 1e-2))


def new_classifier(base: PointClassifier, num_classes: int, kind: str) -> PointClassifier:
    """A classifier for ``num_classes`` that starts from ``base``'s normalisation and hidden layer."""
    norm, hidden = base.mlp[0], base.mlp[1]
    head = PointClassifier(hidden.in_features, num_classes, hidden.out_features)
    head.mlp[0].load_state_dict(norm.state_dict())
    head.mlp[1].load_state_dict(hidden.state_dict())
    for p in list(head.mlp[0].parameters()) + list(head.mlp[1].parameters()):
        p.requires_grad_(kind == "mlp")
    return head


def fit(
    base: PointClassifier, feats: torch.Tensor, labels: np.ndarray, num_classes: int, cand: Candidate, steps: int
) -> PointClassifier:
    """Full-batch class-balanced training of a :func:`new_classifier` of kind ``cand.kind``.

    Runs on one thread: these matrices are small, and on a busy machine more threads mostly wait for each other
    (25x slower on 2 shared cores)."""
    head = new_classifier(base, num_classes, cand.kind).train()
    weights = class_weights(labels, num_classes, 1.0)
    target = torch.from_numpy(labels)
    last = head.mlp[-1]
    with single_thread():
        if cand.kind == "linear":  # the frozen layers once, then only the last one trains
            with torch.no_grad():
                inputs, model, params = head.mlp[:-1](feats), last, list(last.parameters())
        else:
            inputs, model, params = feats, head, list(head.parameters())
        opt = torch.optim.AdamW(params, lr=cand.lr, weight_decay=cand.weight_decay)
        for _ in range(steps):
            loss = F.cross_entropy(model(inputs), target, weight=weights)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    for p in head.parameters():
        p.requires_grad_(True)
    return head.eval()


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fold_ids(labels: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> tuple[np.ndarray, str]:
    """A fold per point: whole inputs per fold when there are 3 or more, else class-stratified over points."""
    rng = np.random.default_rng(seed)
    names = np.unique(groups)
    if len(names) >= 3:
        k = min(folds, len(names))
        order = rng.permutation(names)
        lookup = {g: i % k for i, g in enumerate(order)}
        return np.asarray([lookup[g] for g in groups], np.int64), f"{k} folds over inputs"
    out = np.zeros(len(labels), np.int64)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        out[idx] = np.arange(len(idx)) % folds
    return out, f"{folds} class-stratified folds over points"


def check_counts(labels: np.ndarray, names: tuple[str, ...], minimum: int, what: str) -> None:
    """Every class needs ``minimum`` examples, and there must be two classes or more."""
    if len(names) < 2:
        raise InputError(
            f"adapt needs at least 2 classes, the annotations have {len(names)} ({', '.join(names) or 'none'}); "
            "annotate nuclei of each class with its own point set"
        )
    counts = np.bincount(labels, minlength=len(names))
    few = [(n, int(c)) for n, c in zip(names, counts) if c < minimum]
    if few:
        listed = ", ".join(f"{n!r} has {c}" for n, c in few)
        raise InputError(
            f"too few {what} for cross-validation: {listed} (at least {minimum} per class); annotate more of "
            "those nuclei or remove the class"
        )


def train_classes(
    base: PointClassifier, data: PointFeatures, names: tuple[str, ...], cfg: ClassesConfig = ClassesConfig()
) -> tuple[PointClassifier, dict]:
    """Cross-validate the candidates, fit the best on every point; returns it and the cross-validation report."""
    check_counts(data.labels, names, cfg.min_per_class, "annotated nuclei matched to detections")
    torch.manual_seed(cfg.seed)
    folds, how = fold_ids(data.labels, data.groups, cfg.folds, cfg.seed)
    results = []
    for cand in cfg.candidates:
        pred = np.zeros(len(data.labels), np.int64)
        for f in np.unique(folds):
            train, test = folds != f, folds == f
            head = fit(base, data.feats[train], data.labels[train], len(names), cand, cfg.steps)
            with torch.no_grad(), single_thread():
                pred[test] = head(data.feats[test]).argmax(1).numpy()
        results.append({"classifier": cand.kind, **class_scores(pred, data.labels, names)})
    best = max(range(len(results)), key=lambda i: results[i]["macro_f1"])
    head = fit(base, data.feats, data.labels, len(names), cfg.candidates[best], cfg.steps)
    report = {
        "cross_validation": how,
        "points": int(len(data.labels)),
        "unmatched_points": int(data.unmatched),
        "candidates": results,
        "chosen": results[best]["classifier"],
        "scores": results[best],
    }
    return copy.deepcopy(head), report
