"""Overlay PNG: a slide thumbnail with each nucleus drawn as a dot in its class colour."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from ..io.readers.base import SlideReader
from ..io.resample import read_thumbnail
from ..post.classes import class_colour
from ..runtime.predict import Nuclei


class Overlay:
    def __init__(self, slide: SlideReader, classes: tuple[str, ...], max_side: int = 1024) -> None:
        w0, h0 = slide.level_dimensions[0]
        self.scale = max(w0, h0) / max_side if max(w0, h0) > max_side else 1.0  # level-0 px per overlay px
        self.image = Image.fromarray(read_thumbnail(slide, self.scale))
        self.draw = ImageDraw.Draw(self.image)
        self.colours = [class_colour(name, i) for i, name in enumerate(classes)]
        self.radius = max(1.5, 3.0 / self.scale)

    def add(self, nuclei: Nuclei) -> None:
        r = self.radius
        for (x, y), c in zip(nuclei.xy / self.scale, nuclei.class_id):
            self.draw.ellipse((x - r, y - r, x + r, y + r), fill=self.colours[int(c)])

    def as_array(self) -> np.ndarray:
        return np.asarray(self.image)
