"""BRCA-M2C: H&E tiles at ~0.5 um/px with dot labels ``Y X class`` (1 lymphocyte, 2 tumor, 3 stromal)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from muse_fast.errors import InputError
from muse_fast.post.classes import BRCA_M2C_CLASSES

from .paths import brca_m2c_dir

BRCA_MPP = 0.5
SPLITS = ("train", "val", "test")


@dataclass
class LabelledImage:
    name: str
    image: np.ndarray  # uint8 [H, W, 3]
    xy: np.ndarray  # float32 [N, 2] (x, y) pixel positions
    labels: np.ndarray  # int64 [N], 0-based class ids
    unlabelled: np.ndarray | None = None  # float32 [M, 2]: likely nuclei without a label (train.data.label_gaps)


def split_names(split: str, root: Path | None = None) -> list[str]:
    root = root or brca_m2c_dir()
    if split not in SPLITS:
        raise InputError(f"unknown split '{split}'; choose one of: {', '.join(SPLITS)}")
    path = root / f"brca_ds_{split}.txt"
    if not path.is_file():
        raise InputError(f"BRCA-M2C split file not found: {path}; set MUSE_DATA to the folder holding brca-m2c/")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def read_labels(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``Y X class`` rows -> (xy float32 [N, 2], 0-based labels int64 [N])."""
    rows = np.loadtxt(path, dtype=np.int64, ndmin=2)
    if rows.size == 0:
        return np.zeros((0, 2), np.float32), np.zeros(0, np.int64)
    return rows[:, [1, 0]].astype(np.float32), rows[:, 2] - 1


def load_split(split: str, root: Path | None = None) -> list[LabelledImage]:
    root = root or brca_m2c_dir()
    out = []
    for name in split_names(split, root):
        stem = name[: -len(".png")] if name.endswith(".png") else name
        image = np.asarray(Image.open(root / "images" / name).convert("RGB"))
        xy, labels = read_labels(root / "labels" / f"{stem}_gt_class_coords.txt")
        out.append(LabelledImage(stem, image, xy, labels))
    return out


CLASSES = BRCA_M2C_CLASSES
