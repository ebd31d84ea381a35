"""What ``muse-fast models`` lists: every registered architecture, and the weights files shipped for it."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import WeightsError
from .provenance import file_provenance
from .registry import MODELS
from .weights import DEFAULT_WEIGHTS

SHIPPED_WEIGHTS_DIR = DEFAULT_WEIGHTS.parent


def shipped_weights(folder: Path = SHIPPED_WEIGHTS_DIR) -> dict[str, list[str]]:
    """Architecture name -> the weights files in ``folder`` (the package's) that hold it, by file name."""
    found: dict[str, list[str]] = {}
    for path in sorted(folder.glob("*.pt")):
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # reads only the metadata
            model = payload["model"]
        except Exception as exc:  # noqa: BLE001 - truncated, damaged, not a weights file: the install is broken
            raise WeightsError(
                f"the shipped weights file {path} cannot be read ({type(exc).__name__}); reinstall muse-fast"
            ) from None
        found.setdefault(str(model), []).append(path.name)
    return found


def model_catalog() -> dict[str, dict]:
    """``{name: {"description", "shipped_weights", "default", "provenance"}}`` for every registered architecture
    (``provenance``: per shipped file, :func:`muse_fast.model.provenance.file_provenance`)."""
    weights = shipped_weights()
    return {
        name: {
            "description": spec.description,
            "shipped_weights": weights.get(name, []),
            "default": DEFAULT_WEIGHTS.name in weights.get(name, []),
            "provenance": {f: file_provenance(SHIPPED_WEIGHTS_DIR / f) for f in weights.get(name, [])},
        }
        for name, spec in MODELS.items()
    }
