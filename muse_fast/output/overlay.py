"""Overlay PNG: a slide thumbnail with each nucleus drawn as a dot in its class colour (or any other label's)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from ..io.readers.base import SlideReader
from ..io.resample import read_thumbnail
from ..post.classes import class_colour
from ..runtime.predict import Nuclei

UNREADABLE_COLOUR = (0, 0, 0)


class Overlay:
    def __init__(self, slide: SlideReader, classes: tuple[str, ...], max_side: int = 1024) -> None:
        w0, h0 = slide.level_dimensions[0]
        self.scale = max(w0, h0) / max_side if max(w0, h0) > max_side else 1.0  # level-0 px per overlay px
        self.image = Image.fromarray(read_thumbnail(slide, self.scale))
        self.draw = ImageDraw.Draw(self.image)
        self.colours = [class_colour(name, i) for i, name in enumerate(classes)]
        self.radius = max(1.5, 3.0 / self.scale)

    def add(self, nuclei: Nuclei) -> None:
        self.add_points(nuclei.xy, nuclei.class_id)

    def add_points(self, xy: np.ndarray, labels: np.ndarray) -> None:
        """A dot at each level-0 ``xy [N, 2]`` in the colour of its label (an index into the names given)."""
        r = self.radius
        for (x, y), c in zip(np.asarray(xy) / self.scale, labels):
            self.draw.ellipse((x - r, y - r, x + r, y + r), fill=self.colours[int(c)])

    def mark_unreadable(self, regions: list[list[int]]) -> None:
        """Outline level-0 boxes ``[x, y, w, h]`` whose image data could not be decoded, crossed in black."""
        for x, y, w, h in regions:
            box = (x / self.scale, y / self.scale, (x + w) / self.scale, (y + h) / self.scale)
            self.draw.rectangle(box, outline=UNREADABLE_COLOUR, width=2)
            self.draw.line(box, fill=UNREADABLE_COLOUR, width=1)
            self.draw.line((box[0], box[3], box[2], box[1]), fill=UNREADABLE_COLOUR, width=1)

    def as_array(self) -> np.ndarray:
        return np.asarray(self.image)
