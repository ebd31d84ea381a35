"""NuCLS subset: 15 fully annotated TCGA breast crops at about 0.25 um/px, dot labels ``x,y,class`` (no header).

Classes (``label_map.yaml``): 0 tumor_any, 1 nonTIL_stromal, 2 sTIL, 3 other_nucleus; another class set than
BRCA-M2C's, so it measures detection (every nucleus in a crop is annotated) and recall per NuCLS class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from muse_fast.errors import InputError

from .brca import LabelledImage
from .paths import shared_data_dir

NUCLS_MPP = 0.25  # not recorded upstream; 40x TCGA scans (see the folder's README)
NUCLS_CLASSES = ("tumor_any", "nonTIL_stromal", "sTIL", "other_nucleus")


def nucls_dir() -> Path:
    return shared_data_dir() / "nucls-subset"


def load_nucls(root: Path | None = None) -> list[LabelledImage]:
    """Every crop with its nuclei, in name order; xy in pixels (x, y), labels 0-based NuCLS class ids."""
    root = root or nucls_dir()
    images = sorted((root / "images").glob("*.png"))
    if not images:
        raise InputError(f"no NuCLS crops in {root / 'images'}; set MUSE_DATA to the folder holding nucls-subset/")
    out = []
    for path in images:
        rows = np.loadtxt(root / "labels" / f"{path.stem}.csv", delimiter=",", dtype=np.float64, ndmin=2)
        rows = rows.reshape(-1, 3)
        image = np.asarray(Image.open(path).convert("RGB"))
        out.append(LabelledImage(path.stem, image, rows[:, :2].astype(np.float32), rows[:, 2].astype(np.int64)))
    return out
