"""Schedules as arrays indexed by step, so resuming needs no scheduler state."""

from __future__ import annotations

import numpy as np


def cosine(start: float, end: float, steps: int, warmup: int = 0, warmup_start: float = 0.0) -> np.ndarray:
    """Linear warmup from ``warmup_start`` to ``start`` over ``warmup`` steps, then cosine from ``start`` to ``end``."""
    warm = np.linspace(warmup_start, start, warmup, endpoint=False) if warmup else np.zeros(0)
    rest = max(steps - warmup, 0)
    t = np.arange(rest) / max(rest - 1, 1)
    return np.concatenate([warm, end + 0.5 * (start - end) * (1 + np.cos(np.pi * t))])[:steps]


def linear_then_constant(start: float, end: float, steps: int, ramp: int) -> np.ndarray:
    """``start`` -> ``end`` linearly over ``ramp`` steps, then ``end`` (the DINO teacher-temperature warmup)."""
    values = np.full(steps, end, dtype=np.float64)
    values[: min(ramp, steps)] = np.linspace(start, end, ramp)[: min(ramp, steps)]
    return values
