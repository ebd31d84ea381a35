"""Class-prior calibration of a detector's point classifier, chosen on val only (logit adjustment).

    python -m train.calibrate --weights runs/finetune/weights.pt --out runs/finetune/calibrated.pt

The classifier learns the train split's class mix (19% lymphocyte, 53% tumour, 28% stromal), which other splits and
other labs do not share. Logit adjustment (Menon et al., ICLR 2021) subtracts ``tau * log(prior_c)`` from each class
logit: ``tau = 0`` is the trained classifier, ``tau = 1`` the Bayes rule for balanced classes. ``tau`` is chosen by
val macro F1 (BRCA-M2C protocol) and folded into the classifier's last bias, so the output is an ordinary weights
file. ``--thresholds`` also sweeps the detection threshold (the pair with the best val macro F1, then det F1, wins).
The chosen threshold ``t`` is folded into the centre head too: its logit bias moves by ``logit(d) - logit(t)``,
with ``d`` the default ``DecodeConfig.threshold``, so the default decoding of the written weights keeps exactly the
peaks that threshold ``t`` keeps on the input weights (peak finding and the merge only compare scores). The network
runs once per val tile; each setting only re-decodes the cached dense outputs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from muse_fast.errors import ConfigError
from muse_fast.model.weights import WeightsMeta, load_weights, resolve_weights, save_weights
from muse_fast.post.decode import DecodeConfig
from muse_fast.runtime.engines import TorchEngine

from .config import check_output_file, one_line_errors
from .data.brca import CLASSES, load_split
from .evaluate import EvalConfig, evaluate_images

TAUS = (0.0, 0.25, 0.5, 0.75, 1.0)
MIN_THRESHOLD = 0.01  # and 1 - it: beyond, the folded centre bias leaves float32's useful range


class CachedEngine:
    """Runs the wrapped engine once per batch, then replays the cached outputs in the same order (``rewind``)."""

    def __init__(self, engine) -> None:
        self.engine, self.name, self.device = engine, engine.name, engine.device
        self.cache: list = []
        self.position = 0
        self.bias: torch.Tensor | None = None

    def rewind(self, bias: torch.Tensor | None) -> None:
        self.position, self.bias = 0, bias

    def run(self, tiles: np.ndarray):
        if self.position == len(self.cache):
            self.cache.append(self.engine.run(tiles))
        out = self.cache[self.position]
        self.position += 1
        return out

    def classify(self, feats: torch.Tensor) -> torch.Tensor:
        logits = self.engine.classify(feats)
        return logits if self.bias is None else logits + self.bias.to(logits)


def prior_bias(labels: np.ndarray, num_classes: int, tau: float) -> torch.Tensor:
    """``-tau * log(prior)`` of the class frequencies in ``labels``."""
    prior = np.bincount(labels, minlength=num_classes) / max(len(labels), 1)
    return torch.tensor(-tau * np.log(np.maximum(prior, 1e-6)), dtype=torch.float32)


def sweep(
    model, images, labels: np.ndarray, taus=TAUS, thresholds=(DecodeConfig.threshold,), cfg: EvalConfig = EvalConfig()
) -> list[dict]:
    """Val scores (BRCA-M2C protocol) for each ``tau`` and detection threshold, from one network pass."""
    engine = CachedEngine(TorchEngine(model, "cpu", precision="fp32"))  # thresholds are chosen at the reference
    rows = []
    for threshold in thresholds:
        run_cfg = replace(cfg, decode=replace(cfg.decode, threshold=threshold))
        for tau in taus:
            engine.rewind(prior_bias(labels, len(CLASSES), tau) if tau else None)
            scores = evaluate_images(model, images, run_cfg, "mcspatnet", engine=engine)
            rows.append({"tau": tau, "threshold": threshold, **scores})
    return rows


def fold_bias(model, bias: torch.Tensor) -> None:
    """Add ``bias`` to the classifier's last linear layer in place."""
    with torch.no_grad():
        model.classifier.mlp[-1].bias += bias


def fold_threshold(model, threshold: float, default: float = DecodeConfig.threshold) -> None:
    """Shift the centre logit so that ``default`` on the result means ``threshold`` on the input model."""
    shift = float(torch.logit(torch.tensor(default)) - torch.logit(torch.tensor(threshold)))
    with torch.no_grad():
        model.centre_head.out.bias[0] += shift


def calibrate_weights(
    model, meta: WeightsMeta, taus=(0.0,), thresholds=(DecodeConfig.threshold,), train_set=None, val_set=None
):
    """Choose ``tau`` and the detection threshold on val and fold them into ``model`` in place.

    Returns the weights metadata to save with it (the sweep recorded under ``config["calibration"]``) and the
    chosen row of the sweep. The splits default to the official train (for the class prior) and val splits.
    """
    train_set = train_set if train_set is not None else load_split("train")
    labels = np.concatenate([s.labels for s in train_set])
    rows = sweep(model, val_set if val_set is not None else load_split("val"), labels, tuple(taus), tuple(thresholds))
    for r in rows:  # on stderr: stdout is the caller's (finetune prints one JSON document there)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}), file=sys.stderr)
    best = max(rows, key=lambda r: (r["macro_f1"], r["det_f1"], -r["tau"]))  # a full tie: the first in the grid
    fold_bias(model, prior_bias(labels, len(CLASSES), best["tau"]))
    fold_threshold(model, best["threshold"])
    chosen = {"tau": best["tau"], "threshold": best["threshold"], "chosen_on": "val macro F1, then det F1"}
    config = {**meta.config, "calibration": {**chosen, "sweep": rows}}
    return WeightsMeta(**{**asdict(meta), "config": config}), best


def parse_floats(value: str | float | list) -> tuple[float, ...]:
    """``"0.3,0.4"`` (a flag), ``0.3`` or ``[0.3, 0.4]`` (YAML) -> ``(0.3, 0.4)``; ``""`` -> ``()``.

    ValueError if an item is empty or not a finite number.
    """
    if isinstance(value, str) and not value.strip():
        return ()
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, list | tuple) else [value]
    if any(isinstance(t, str) and not t.strip() for t in items):
        raise ValueError(f"{value!r} has an empty item")
    numbers = tuple(float(t) for t in items)
    if not all(math.isfinite(n) for n in numbers):
        raise ValueError(f"{value!r} holds a value that is not a finite number")
    return numbers


def calibration_grid(
    thresholds: str | float | list, taus: str | float | list, flags: tuple[str, str] = ("--thresholds", "--taus")
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The detection thresholds and taus to sweep, or a one-line ConfigError naming ``flags`` (checked up front)."""
    grid = []
    for flag, value in zip(flags, (thresholds, taus), strict=True):
        try:
            grid.append(parse_floats(value))
        except ValueError as exc:
            raise ConfigError(f"{flag} must be a comma list of numbers: {exc}") from None
    if not all(MIN_THRESHOLD <= t <= 1 - MIN_THRESHOLD for t in grid[0]):
        raise ConfigError(f"{flags[0]} must lie in [{MIN_THRESHOLD}, {1 - MIN_THRESHOLD}], got {thresholds!r}")
    if grid[0] and not grid[1]:
        raise ConfigError(f"{flags[1]} is empty; give at least 0")
    if not all(t >= 0 for t in grid[1]):
        raise ConfigError(f"{flags[1]} must be 0 or more (0 = no logit adjustment), got {taus!r}")
    return grid[0], grid[1]


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="train.calibrate", description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=None, help="weights to calibrate (default: shipped)")
    parser.add_argument("--out", type=Path, required=True, help="calibrated weights file to write")
    parser.add_argument("--half", action=argparse.BooleanOptionalAction, default=True, help="store fp16")
    parser.add_argument("--taus", default=",".join(map(str, TAUS)), help="comma list of logit-adjustment strengths")
    parser.add_argument("--thresholds", default=str(DecodeConfig.threshold), help="comma list of detection thresholds")
    args = parser.parse_args(argv)
    thresholds, taus = calibration_grid(args.thresholds, args.taus)
    if not thresholds:
        raise ConfigError("--thresholds is empty; give at least one detection threshold, e.g. 0.3")
    check_output_file(args.out, [resolve_weights(args.weights)])  # before minutes of sweeping, not after
    model, meta = load_weights(args.weights)
    meta, best = calibrate_weights(model, meta, taus, thresholds)
    save_weights(args.out, model, meta, half=args.half)
    print(
        f"tau {best['tau']}, threshold {best['threshold']} (val det F1 {best['det_f1']:.4f}, "
        f"macro F1 {best['macro_f1']:.4f}) -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
