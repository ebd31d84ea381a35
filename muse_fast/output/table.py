"""CSV table of nuclei: ``x,y`` in level-0 pixels, ``class_id,class_name,score,class_probability``."""

from __future__ import annotations

import csv
from pathlib import Path

from ..runtime.predict import Nuclei
from .atomic import atomic_write

COLUMNS = ("x", "y", "class_id", "class_name", "score", "class_probability")


def write_csv(path: Path, nuclei: Nuclei, classes: tuple[str, ...]) -> None:
    with atomic_write(path) as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        for (x, y), c, s, p in zip(nuclei.xy, nuclei.class_id, nuclei.score, nuclei.class_prob):
            writer.writerow((f"{x:.2f}", f"{y:.2f}", int(c), classes[int(c)], f"{s:.4f}", f"{p:.4f}"))
