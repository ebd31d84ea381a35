"""Per-class nucleus density: counts on a grid of square cells of a fixed area, in nuclei per mm^2.

``infer`` writes it as ``<stem>.density.png`` (one heat map panel per class) and ``muse-fast view`` draws the same
grid as a layer. Cells are squares of ``CELL_MM2`` (0.1 mm^2: about 316 um a side) anchored at the slide's origin;
a cell's value is its nucleus count divided by the part of the cell's area that is slide and, with a tissue mask,
tissue (cells with under 10% of either have none). All classes share one colour scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from ..post.classes import class_colours
from .fonts import text_font
from .text import printable

CELL_MM2 = 0.1
PANEL_MAX_SIDE = 256  # pixels of the longer side of each class's panel in the PNG
LABEL_HEIGHT = 14
NO_TISSUE = (200, 200, 200)


def cell_side_px(mpp: float, cell_mm2: float = CELL_MM2) -> float:
    """Side of a square cell of ``cell_mm2`` in level-0 pixels of ``mpp`` microns."""
    return math.sqrt(cell_mm2) * 1000.0 / mpp


MIN_COVER = 0.1  # cells with less image (or tissue) than this fraction of their area get no density


@dataclass
class DensityGrid:
    """Nucleus counts per class on square cells of ``cell_px`` level-0 pixels (``counts [classes, rows, cols]``).

    ``cover [rows, cols]`` is the fraction of each cell's area that is inside the slide (and, after
    :meth:`restrict_to`, in tissue): densities divide by that area, so a cell cut by the slide's edge or half glass
    does not read low.
    """

    counts: np.ndarray
    cell_px: float
    cell_mm2: float
    cover: np.ndarray

    @classmethod
    def empty(cls, width: int, height: int, n_classes: int, mpp: float, cell_mm2: float = CELL_MM2) -> DensityGrid:
        side = cell_side_px(mpp, cell_mm2)
        rows, cols = max(1, math.ceil(height / side)), max(1, math.ceil(width / side))
        cover_y = np.clip(height - np.arange(rows) * side, 0, side) / side
        cover_x = np.clip(width - np.arange(cols) * side, 0, side) / side
        return cls(np.zeros((n_classes, rows, cols), np.int64), side, cell_mm2, np.outer(cover_y, cover_x))

    def restrict_to(self, mask) -> None:
        """Count only the tissue of ``mask`` (a :class:`~muse_fast.io.tissue.TissueMask`) as each cell's area."""
        side = self.cell_px
        for r, c in np.ndindex(self.cover.shape):
            self.cover[r, c] *= mask.fraction_in(c * side, r * side, (c + 1) * side, (r + 1) * side)

    def add(self, xy: np.ndarray, class_id: np.ndarray) -> None:
        """Count nuclei at level-0 ``xy [N, 2]`` of classes ``class_id [N]``; points off the slide are clipped in."""
        if len(xy) == 0:
            return
        n, rows, cols = self.counts.shape
        col = np.clip((np.asarray(xy)[:, 0] // self.cell_px).astype(np.int64), 0, cols - 1)
        row = np.clip((np.asarray(xy)[:, 1] // self.cell_px).astype(np.int64), 0, rows - 1)
        cls = np.asarray(class_id, np.int64)
        keep = (cls >= 0) & (cls < n)
        flat = (cls[keep] * rows + row[keep]) * cols + col[keep]
        self.counts += np.bincount(flat, minlength=n * rows * cols).reshape(n, rows, cols)

    def valid(self) -> np.ndarray:
        """``[rows, cols]`` bool: cells with enough slide (or tissue) to have a density."""
        return self.cover >= MIN_COVER

    def per_mm2(self) -> np.ndarray:
        """``[classes, rows, cols]`` float32: nuclei per mm^2 of each cell's slide (or tissue) area; 0 where too
        little of the cell is slide or tissue (:meth:`valid`)."""
        area = self.cell_mm2 * np.where(self.valid(), self.cover, np.inf)
        return (self.counts / area).astype(np.float32)

    def image(self, classes: tuple[str, ...]) -> Image.Image:
        """One panel per class side by side on one shared scale: white (0) to the class colour (the densest cell of
        any class), each labelled with the class name and its peak; cells without enough tissue are grey; a caption
        gives the unit, the cell size and the scale."""
        n, rows, cols = self.counts.shape
        zoom = max(1, PANEL_MAX_SIDE // max(rows, cols))
        pw, ph = cols * zoom, rows * zoom
        width = max(pw, 120)
        out = Image.new("RGB", (max(n * (width + 4), 420), ph + 2 * LABEL_HEIGHT), (255, 255, 255))
        draw = ImageDraw.Draw(out)
        density, valid = self.per_mm2(), self.valid()
        scale = float(density.max()) if density.size else 0.0
        colours = class_colours(classes)
        font = text_font(None, classes[:n])  # Pillow's own unless a class name has letters beyond ASCII
        for c, name in enumerate(classes[:n]):
            t = density[c] / scale if scale > 0 else density[c]
            colour = np.asarray(colours[c], np.float32)
            rgb = (255 - t[..., None] * (255 - colour)).round().astype(np.uint8)
            rgb[~valid] = NO_TISSUE
            panel = Image.fromarray(rgb).resize((pw, ph), Image.NEAREST)
            left = c * (width + 4)
            out.paste(panel, (left, LABEL_HEIGHT))
            label = f"{printable(name)} max {float(density[c].max()):.0f}/mm2"
            draw.text((left + 1, 1), label, fill=(0, 0, 0), font=font)
        side_um = math.sqrt(self.cell_mm2) * 1000
        caption = f"nuclei per mm2 of tissue in {side_um:.0f} um cells; full colour = {scale:.0f}/mm2; grey: no tissue"
        draw.text((1, ph + LABEL_HEIGHT + 1), caption, fill=(0, 0, 0))
        return out


def class_densities(per_class: dict[str, int], area_mm2: float) -> dict[str, float]:
    """Nuclei per mm^2 of tissue for each class (0 when the area is unknown)."""
    return {name: round(count / area_mm2, 2) if area_mm2 > 0 else 0.0 for name, count in per_class.items()}
