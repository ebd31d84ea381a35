"""The overlay's markers drawn with numpy (stamps composited at once) against Pillow drawing them one by one."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from muse_fast.output.overlay import draw_markers, draw_markers_one_by_one
from muse_fast.post.classes import BRCA_M2C_CLASSES, class_colour


def _mosaic_points(brca_dir, per_row: int = 12, scale: float = 12.0) -> tuple[np.ndarray, np.ndarray, Image.Image]:
    """BRCA-M2C's labelled nuclei of all its images side by side, as a mosaic's overlay places them (overlay px,
    sub-pixel offsets, the first column and row touching the edges; every 4th image's nuclei as a fourth class), and
    one of its images as the background."""
    rng = np.random.default_rng(3)
    xy, labels = [], []
    paths = sorted((brca_dir / "labels").glob("*.txt"))
    for i, path in enumerate(paths):
        yxc = np.loadtxt(path, dtype=np.float64, ndmin=2)
        cell = np.array([i % per_row, i // per_row]) * 1000.0
        xy.append((yxc[:, [1, 0]] + cell + rng.uniform(-0.5, 0.5, (len(yxc), 2))) / scale)
        labels.append(yxc[:, 2].astype(np.int64) - 1 if i % 4 else np.full(len(yxc), 3))  # a 4th class: triangles
    xy = np.concatenate(xy)
    size = (int(per_row * 1000 / scale), int(np.ceil(len(paths) / per_row) * 1000 / scale))
    background = Image.open(sorted((brca_dir / "images").glob("*.png"))[0]).convert("RGB").resize(size)
    return xy, np.concatenate(labels), background


@pytest.mark.parametrize("radius", [2.0, 3.3])
def test_markers_drawn_at_once_are_pixel_for_pixel_those_drawn_one_by_one(brca_dir, radius):
    xy, labels, background = _mosaic_points(brca_dir)
    xy = np.concatenate([xy, [[-1.7, 40.2], [30.4, -0.6], [-0.2, -0.9], [background.width + 0.4, 9.5]]])
    labels = np.concatenate([labels, [0, 1, 2, 3]])
    colours = [class_colour(name, i) for i, name in enumerate((*BRCA_M2C_CLASSES, "other"))]
    reference, fast = background.copy(), background.copy()
    draw_markers_one_by_one(reference, xy, labels, radius, colours)
    draw_markers(fast, xy, labels, radius, colours)
    assert len(xy) > 10_000 and not np.array_equal(np.asarray(reference), np.asarray(background))
    assert np.array_equal(np.asarray(fast), np.asarray(reference))
