"""Overlay PNG: a slide thumbnail with each nucleus drawn as a marker in its class colour and shape (circle, square,
diamond, triangle, then again), so classes differ without colour too, and a legend with counts."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..io.readers.base import SlideReader
from ..io.resample import read_thumbnail
from ..post.classes import class_colour
from ..runtime.predict import Nuclei

UNREADABLE_COLOUR = (0, 0, 0)
DOT_OUTLINE = (40, 40, 40)  # a dark rim keeps light dots visible on glass; not UNREADABLE_COLOUR
LEGEND_BACKGROUND = (255, 255, 255)
LEGEND_TEXT = (40, 40, 40)
LEGEND_FONT_PX = 14
MARKERS = ("circle", "square", "diamond", "triangle")  # class i gets MARKERS[i % 4]


def draw_marker(draw: ImageDraw.ImageDraw, x: float, y: float, r: float, shape: str, fill: tuple) -> None:
    """One nucleus marker of half-size ``r`` centred at ``(x, y)``, with a dark rim."""
    if shape == "circle":
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill, outline=DOT_OUTLINE)
    elif shape == "square":
        q = r * 0.85  # about the circle's area
        draw.rectangle((x - q, y - q, x + q, y + q), fill=fill, outline=DOT_OUTLINE)
    elif shape == "diamond":
        q = r * 1.2
        draw.polygon([(x, y - q), (x + q, y), (x, y + q), (x - q, y)], fill=fill, outline=DOT_OUTLINE)
    else:
        q = r * 1.3
        draw.polygon([(x, y - q), (x + q, y + q * 0.75), (x - q, y + q * 0.75)], fill=fill, outline=DOT_OUTLINE)


class Overlay:
    def __init__(self, slide: SlideReader, classes: tuple[str, ...], max_side: int = 1024) -> None:
        w0, h0 = slide.level_dimensions[0]
        self.scale = max(w0, h0) / max_side if max(w0, h0) > max_side else 1.0  # level-0 px per overlay px
        self.thumbnail = Image.fromarray(read_thumbnail(slide, self.scale))  # the dots are drawn onto it
        self.draw = ImageDraw.Draw(self.thumbnail)
        self.classes = classes
        self.colours = [class_colour(name, i) for i, name in enumerate(classes)]
        self.counts = np.zeros(len(classes), np.int64)
        self.radius = max(2.0, 3.0 / self.scale)

    def add(self, nuclei: Nuclei) -> None:
        self.add_points(nuclei.xy, nuclei.class_id)

    def add_points(self, xy: np.ndarray, labels: np.ndarray) -> None:
        """A marker at each level-0 ``xy [N, 2]`` in the colour and shape of its label (an index into the classes)."""
        r = self.radius
        labels = np.asarray(labels, np.int64)
        for (x, y), c in zip(np.asarray(xy) / self.scale, labels):
            draw_marker(self.draw, x, y, r, MARKERS[c % len(MARKERS)], self.colours[c])
        self.counts += np.bincount(labels, minlength=len(self.classes))[: len(self.classes)]

    def mark_unreadable(self, regions: list[list[int]]) -> None:
        """Outline level-0 boxes ``[x, y, w, h]`` whose image data could not be decoded, crossed in black."""
        for x, y, w, h in regions:
            box = (x / self.scale, y / self.scale, (x + w) / self.scale, (y + h) / self.scale)
            self.draw.rectangle(box, outline=UNREADABLE_COLOUR, width=2)
            self.draw.line(box, fill=UNREADABLE_COLOUR, width=1)
            self.draw.line((box[0], box[3], box[2], box[1]), fill=UNREADABLE_COLOUR, width=1)

    def legend_lines(self) -> list[str]:
        """The legend's text: ``"<class>  <count>"`` per class, then ``"<total> nuclei"``."""
        lines = [f"{name}  {int(n):,}" for name, n in zip(self.classes, self.counts)]
        return lines + [f"{int(self.counts.sum()):,} nuclei"]

    @property
    def image(self) -> Image.Image:
        """The overlay: the thumbnail with its dots, and below it a legend (each class's dot, name and count; total)."""
        font = _font(LEGEND_FONT_PX)
        line_h = LEGEND_FONT_PX + 6
        lines = self.legend_lines()
        pad, dot = 8, LEGEND_FONT_PX // 2
        text_w = max(int(font.getlength(t)) for t in lines)
        width = max(self.thumbnail.width, pad * 3 + 2 * dot + text_w)
        height = self.thumbnail.height + pad * 2 + line_h * len(lines)
        canvas = Image.new("RGB", (width, height), LEGEND_BACKGROUND)
        canvas.paste(self.thumbnail, (0, 0))
        draw = ImageDraw.Draw(canvas)
        for i, text in enumerate(lines):
            top = self.thumbnail.height + pad + i * line_h
            if i < len(self.colours):
                cy = top + line_h // 2
                draw_marker(draw, pad + dot, cy, dot, MARKERS[i % len(MARKERS)], self.colours[i])
            draw.text((pad * 2 + 2 * dot, top + 2), text, fill=LEGEND_TEXT, font=font)
        return canvas

    def as_array(self) -> np.ndarray:
        return np.asarray(self.image)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1: a scalable font
    except TypeError:
        return ImageFont.load_default()
