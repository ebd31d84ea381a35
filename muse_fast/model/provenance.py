"""Where a weights file came from: architecture, init (random or which pretraining run), data, recipe, commit.

Training writes ``config["provenance"]`` (see ``train.provenance``); for files written before that, the record is
rebuilt from what their training config holds, and every field it lacks reads ``not recorded``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import torch

PROVENANCE_FIELDS = ("architecture", "init", "data", "recipe", "commit")
NOT_RECORDED = "not recorded"
RECIPE_KEYS = (
    "steps",
    "batch_size",
    "lr",
    "tile_size",
    "seed",
    "cls_loss",
    "stain",
    "blur_p",
    "jpeg_p",
    "scale_jitter",
    "backbone_lr_scale",
    "variety",
    "variety_kinds",
    "ignore_unlabelled",
    "ignore_distance_um",
    "self_train_rois",
    "self_train_share",
    "ema_momentum",
    "pseudo_rois",
)


def current_commit(repo: Path = Path(__file__).resolve().parents[2]) -> str:
    """``git rev-parse HEAD`` of the source tree (``+dirty`` with uncommitted changes), or ``not recorded``."""
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
        )
    except (OSError, subprocess.CalledProcessError):
        return NOT_RECORDED
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def provenance_from_config(model: str, config: dict) -> dict:
    """The recorded provenance of a weights file, or what its training config tells (``not recorded`` otherwise)."""
    recorded = config.get("provenance")
    if isinstance(recorded, dict):
        return {k: recorded.get(k, NOT_RECORDED) for k in PROVENANCE_FIELDS} | {
            k: v for k, v in recorded.items() if k not in PROVENANCE_FIELDS
        }
    recipe = {k: config[k] for k in RECIPE_KEYS if k in config}
    return {
        "architecture": model,
        "init": config.get("init") or ("random" if "init" in config else NOT_RECORDED),
        "data": NOT_RECORDED,
        "recipe": recipe or NOT_RECORDED,
        "commit": NOT_RECORDED,
    }


def file_provenance(path: str | Path) -> dict:
    """:func:`provenance_from_config` of a weights file, reading only its metadata (memory-mapped)."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=True, mmap=True)
    return provenance_from_config(str(payload.get("model")), payload.get("config") or {})
