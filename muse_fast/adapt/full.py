"""``--mode full``: fine-tune on complete regions (every nucleus annotated), with early stopping on held-out regions.

Two stages after the classes-mode classifier is in place, each run with the shipped recipe's augmentation
(:func:`muse_fast.train.finetune.make_batch`: scale, stain, colour, blur, JPEG, rotations and flips):

- ``head``: the centre head alone (backbone and classifier frozen, so the point features do not change);
- ``network``: every weight, the classifier included (class-balanced loss on the regions' points).

A fifth of the regions (at least one) is held out. Each stage is scored there every ``eval_every`` steps (one-to-one
matching within 3 um, as ``train.evaluate``); of {base, head, network} the simplest is kept unless a later stage
beats it by ``min_gain`` in det F1 + macro F1, and
the detection threshold is chosen on the same regions and folded into the weights (``train.calibrate``). Every
score is taken at the best of ``thresholds`` for the weights scored (the grid grows upward while its top is the
best), so a stage that only shifts the centre logits is not counted as worse.

Classes are scored with a point classifier fitted as classes mode fits it (:func:`.classes.train_classes`: the same
candidates, class-balanced loss and cross-validation) on the points outside the held-out regions, on the features
of the network being scored: once for the base network (the head stage does not change the features), and at every
check of the network stage, whose features move. The kept weights carry the classifier they were scored with.

Each stage has its own share of the time budget (``head_share`` of ``max_minutes`` for the head, the rest for the
network), so a slow head stage cannot starve the network stage. The learning rate warms up over 10 steps and then
falls on a cosine to a tenth. On a CPU with bf16 units (AMX, AVX512-BF16), or on CUDA, training runs under bf16
autocast and the held-out regions are scored by the torch engine at bf16 (``amp="auto"``; ``"none"``: fp32).
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..errors import InputError
from ..post.decode import DecodeConfig
from ..runtime.engines import TorchEngine
from ..runtime.predict import predict_image
from ..train.amp import autocast, resolve_amp
from ..train.calibrate import CachedEngine, fold_threshold
from ..train.data.brca import LabelledImage
from ..train.finetune import FinetuneConfig, make_batch, training_loss
from ..train.losses.point_class import class_weights
from ..train.metrics import score_detections
from .classes import ClassesConfig, train_classes
from .detect import MATCH_UM, OVERLAP, matched_features
from .inputs import Window


@dataclass(frozen=True)
class FullConfig:
    head_steps: int = 150
    network_steps: int = 300
    batch_size: int = 8
    head_lr: float = 3e-4  # 1e-3 (the recipe's lr from scratch) lowered the held-out det F1 of a trained head
    network_lr: float = 3e-4  # 1e-4: lower det F1 + macro F1 on three adapt benchmarks (docs/results.md)
    weight_decay: float = 0.05
    eval_every: int = 25
    holdout: float = 0.2  # fraction of the regions held out for early stopping (at least one)
    thresholds: tuple[float, ...] = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5)  # extended upward while the top is best
    max_threshold: float = 0.9  # the highest threshold the extended grid reaches
    max_minutes: float = 12.0  # both stages stop by then (the best weights so far are kept); 0 = no limit
    head_share: float = 0.35  # of max_minutes for the head stage; the network stage has the rest
    min_gain: float = (
        0.02  # a trained stage replaces the simpler weights only if its det F1 + macro F1 is this much higher
    )
    amp: str = "auto"  # bf16 autocast where the device has bf16 units (auto), "bf16" or "none" (fp32)
    seed: int = 2025


def lr_at(step: int, steps: int, lr: float, warmup: int = 10) -> float:
    """Linear warm-up over ``warmup`` steps, then a cosine from ``lr`` down to ``lr / 10`` at the last step."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(steps - warmup - 1, 1)
    return lr * (0.1 + 0.45 * (1 + math.cos(math.pi * min(progress, 1.0))))


def region_samples(windows: list[Window]) -> list[LabelledImage]:
    """The complete regions as training images (points in their pixels)."""
    return [
        LabelledImage(f"{w.group}#{i}", w.image, w.xy.astype(np.float32), w.labels)
        for i, w in enumerate(windows)
        if w.region is not None
    ]


def held_out_ids(windows: list[Window], fraction: float, seed: int) -> set[int]:
    """Indices (in ``windows``) of the held-out complete regions, as :func:`split_regions` holds them out."""
    regions = [i for i, w in enumerate(windows) if w.region is not None]
    return set(split_regions(regions, fraction, seed)[1])


def split_regions(samples: list, fraction: float, seed: int) -> tuple[list, list]:
    """(train, held out): a random ``fraction`` of the regions, at least one, is held out."""
    if len(samples) < 2:
        raise InputError(
            f"--mode full needs at least 2 complete regions (one is held out to stop training), found {len(samples)}; "
            "draw more rectangles around fully annotated areas, or use --mode classes"
        )
    order = np.random.default_rng(seed).permutation(len(samples))
    n_held = max(1, round(fraction * len(samples)))
    return [samples[i] for i in order[n_held:]], [samples[i] for i in order[:n_held]]


def region_engine(model, amp: str) -> TorchEngine:
    """The torch engine that scores the held-out regions, at the training precision (bf16 or fp32)."""
    return TorchEngine(model, "cpu", "bf16" if amp == "bf16" else "fp32")


Refit = Callable[[object], tuple[object, dict]]  # model -> (point classifier, its cross-validation report)


def classifier_refit(start, train: list[Window], names: tuple[str, ...], tile: int, mpp: float, amp: str, cfg) -> Refit:
    """A classes-mode fit, from the base weights' classifier ``start`` (which has seen none of the user's points), on
    the features that a model gives at the annotated points of ``train`` (the windows outside the held-out regions).
    Too few points of a class there: the model's own classifier, with the reason."""
    groups = sorted({w.group for w in train})

    def refit(model) -> tuple[object, dict]:
        model.eval()
        data = matched_features(region_engine(model, amp), train, groups, tile, mpp)
        try:
            return train_classes(start, data, names, cfg)
        except InputError as exc:
            return model.classifier, {"kept_own_classifier": str(exc)}

    return refit


@contextlib.contextmanager
def classifier_of(model, head) -> Iterator[None]:
    """``model`` with ``head`` as its point classifier for the duration (engines built inside see it)."""
    own = model.classifier
    model.classifier = head
    try:
        yield
    finally:
        model.classifier = own


def score_regions(engine, samples: list, tile_size: int, mpp: float, k: int, threshold: float) -> dict:
    """Detection and per-class scores on ``samples`` (one-to-one within :data:`MATCH_UM`)."""
    rows = []
    for s in samples:
        nuc = predict_image(engine, s.image, tile_size, OVERLAP, DecodeConfig(threshold=threshold))
        rows.append((s.xy.astype(np.float64), s.labels, nuc.xy, nuc.class_id))
    return score_detections(rows, k, MATCH_UM / mpp, "hungarian").as_dict()


def _stage(
    model, train, held, recipe: FinetuneConfig, cfg: FullConfig, steps, lr, which, tile, mpp, k, bar, times, refit
):
    """Train ``which`` ("head" or "network") for ``steps`` or until the deadline; ``times`` = (start of adapt_full,
    deadline), both ``time.time()`` values, deadline 0 for none. At each check ``refit(model)`` gives the point
    classifier to score classes with. Returns (best state, its held-out scores, its classifier's report, log)."""
    clock, deadline = times
    amp = cfg.amp  # resolved by adapt_full
    rng, gen = np.random.default_rng(cfg.seed), torch.Generator().manual_seed(cfg.seed)
    head_only = which == "head"
    for p in model.parameters():
        p.requires_grad_(not head_only)
    for p in model.centre_head.parameters():
        p.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    labels = np.concatenate([s.labels for s in train])
    weights = class_weights(labels, k, recipe.cls_balance_power)
    best_state, best, best_fit, log = None, None, None, []
    for step in range(steps):
        model.train()
        if head_only:
            model.backbone.eval()  # frozen, BN statistics included
            model.classifier.eval()
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr)
        with autocast(amp, torch.device("cpu")):
            loss, parts = training_loss(model, make_batch(train, recipe, rng, gen), recipe, weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 3.0)
        opt.step()
        bar.update(1)
        over = bool(deadline) and time.time() > deadline
        if (step + 1) % cfg.eval_every == 0 or step == steps - 1 or over:
            model.eval()
            head, fitted = refit(model)
            with classifier_of(model, head):
                scores = best_threshold_scores(model, held, tile, mpp, k, cfg, amp)
                if best is None or _rank(scores) > _rank(best):
                    best, best_fit, best_state = scores, fitted, copy.deepcopy(model.state_dict())
            log.append({"stage": which, "step": step + 1, "loss": round(loss.item(), 4), **scores})
            log[-1]["minutes"] = round((time.time() - clock) / 60, 2)
            bar.set_postfix(stage=which, det_f1=round(scores["det_f1"], 3), macro_f1=round(scores["macro_f1"], 3))
        if over:
            break
    for p in model.parameters():
        p.requires_grad_(True)
    return best_state, best, best_fit, log


def choose_stage(held_out: dict[str, dict], min_gain: float) -> str:
    """The stage to keep: base, unless head or network (in that order) scores at least ``min_gain`` more det F1 +
    macro F1 on the held-out regions than the stage kept so far. With a few held-out regions a smaller gain is noise,
    and a trained stage that merely ties the base is more likely to be worse on the rest of the tissue."""
    chosen = "base"
    for name in ("head", "network"):
        if name in held_out and _rank(held_out[name]) >= _rank(held_out[chosen]) + min_gain:
            chosen = name
    return chosen


def _rank(scores: dict) -> float:
    return scores["det_f1"] + scores["macro_f1"]


def _short(scores: dict) -> dict:
    return {k: round(v, 4) for k, v in scores.items()}


def adapt_full(
    model,
    windows: list[Window],
    tile: int,
    mpp: float,
    names: tuple[str, ...],
    cfg: FullConfig,
    bar,
    classes: ClassesConfig = ClassesConfig(),
    start=None,
) -> tuple:
    """Fine-tune ``model`` (which already holds the new classifier) in place; returns (model, report). ``start``:
    the base weights' point classifier, from which the classifiers scored on held-out regions are fitted (default:
    the model's own, which must then not have seen the held-out regions' points)."""
    clock = time.time()
    amp, k = resolve_amp(cfg.amp), len(names)
    cfg = replace(cfg, amp=amp)
    held_ids = held_out_ids(windows, cfg.holdout, cfg.seed)
    samples = zip([i for i, w in enumerate(windows) if w.region is not None], region_samples(windows))
    train, held = [], []
    for i, sample in samples:
        (held if i in held_ids else train).append(sample)
    own = [w for i, w in enumerate(windows) if i not in held_ids]
    refit = classifier_refit(start if start is not None else model.classifier, own, names, tile, mpp, amp, classes)
    recipe = FinetuneConfig(tile_size=tile, batch_size=cfg.batch_size, seed=cfg.seed)
    model.eval()
    base_fit = refit(model)  # the head stage keeps the features: its checks use this classifier too
    with classifier_of(model, base_fit[0]):
        base = best_threshold_scores(model, held, tile, mpp, k, cfg, amp)
        states = {"base": copy.deepcopy(model.state_dict())}
    held_out, fits, log = {"base": base}, {"base": base_fit[1]}, []
    budget = cfg.max_minutes * 60
    stages = (
        ("head", cfg.head_steps, cfg.head_lr, clock + cfg.head_share * budget if budget else 0.0),
        ("network", cfg.network_steps, cfg.network_lr, clock + budget if budget else 0.0),
    )
    for which, steps, lr, deadline in stages:  # the network stage also gets what the head stage left unused
        if steps <= 0 or (deadline and time.time() > deadline):
            continue
        model.load_state_dict(states["head"] if which == "network" and "head" in states else states["base"])
        stage_refit = (lambda _model: base_fit) if which == "head" else refit
        state, scores, fitted, stage_log = _stage(
            model,
            train,
            held,
            replace(recipe, lr=lr),
            cfg,
            steps,
            lr,
            which,
            tile,
            mpp,
            k,
            bar,
            (clock, deadline),
            stage_refit,
        )
        log += stage_log
        if state is not None:
            states[which], held_out[which], fits[which] = state, _short(scores), fitted
    chosen = choose_stage(held_out, cfg.min_gain)
    model.load_state_dict(states[chosen])  # with the classifier it was scored with
    model.eval()
    threshold, sweep = choose_threshold(model, held, tile, mpp, k, cfg, amp)
    fold_threshold(model, threshold)
    report = {
        "regions": len(train) + len(held),
        "held_out_regions": len(held),
        "held_out": held_out,
        "chosen": chosen,
        "classifier": _fit_summary(fits[chosen]),
        "threshold": threshold,
        "threshold_sweep": sweep,
        "log": log,
        "minutes": round((time.time() - clock) / 60, 2),
        "amp": amp,
    }
    return model, report


def _fit_summary(fitted: dict) -> dict:
    """The refitted classifier's cross-validation (without its per-candidate tables)."""
    return {k: v for k, v in fitted.items() if k != "candidates"}


def best_threshold_scores(model, held: list, tile: int, mpp: float, k: int, cfg: FullConfig, amp: str) -> dict:
    """Held-out scores at the model's own best threshold: training moves the centre logits away from the threshold
    folded into the base weights, so stages are compared at their best thresholds."""
    threshold, sweep = choose_threshold(model, held, tile, mpp, k, cfg, amp)
    return next(r for r in sweep if r["threshold"] == threshold)


def threshold_grid(thresholds: tuple[float, ...], best: float, top: float) -> float | None:
    """The next threshold to try above ``thresholds`` when ``best`` is its top (one step of the grid's last
    spacing, at most ``top``), else None."""
    grid = sorted(thresholds)
    if best < grid[-1] or len(grid) < 2:
        return None
    step = grid[-1] - grid[-2]
    nxt = round(grid[-1] + step, 4)
    return nxt if nxt <= top + 1e-9 else None


def choose_threshold(model, held: list, tile: int, mpp: float, k: int, cfg: FullConfig, amp: str) -> tuple[float, list]:
    """The detection threshold with the best held-out det F1 + macro F1 over ``cfg.thresholds``, extended upward
    while the best is the grid's top (the network runs once per tile)."""
    engine = CachedEngine(region_engine(model, amp))
    rows: list[dict] = []

    def score(t: float) -> None:
        engine.rewind(None)
        rows.append({"threshold": t, **_short(score_regions(engine, held, tile, mpp, k, t))})

    for t in cfg.thresholds:
        score(t)
    while True:
        best = max(rows, key=lambda r: (_rank(r), -abs(r["threshold"] - DecodeConfig.threshold)))
        nxt = threshold_grid(tuple(r["threshold"] for r in rows), best["threshold"], cfg.max_threshold)
        if nxt is None:
            return float(best["threshold"]), rows
        score(nxt)
