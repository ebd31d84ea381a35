"""Overlay PNG: a slide thumbnail with each nucleus drawn as a marker in its class colour and shape (circle, square,
diamond, triangle, then again), so classes differ without colour too, and a legend with counts.

Markers sit on whole thumbnail pixels (the nearest to each nucleus). Each class's marker is drawn once by PIL as a
stamp; :meth:`Overlay.add_points` pastes the stamps, later markers over earlier ones, with the native library
(``csrc/overlay.cpp``) where it is built and with numpy otherwise, pixel for pixel what
:meth:`Overlay.add_points_reference` draws with one PIL call per nucleus (33,000 nuclei: about 0.003 s natively,
0.06 s with numpy, 0.17 s with PIL; docs/results.md).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from ..io.readers.base import SlideReader
from ..io.resample import read_thumbnail
from ..post.classes import class_colours
from ..runtime.predict import Nuclei
from .fonts import text_font
from .text import printable

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


class Stamp:
    """One class's marker as pixels: offsets ``[K, 2]`` (dy, dx) from its centre and their colours ``[K, 3]``."""

    def __init__(self, radius: float, shape: str, fill: tuple) -> None:
        side = 2 * int(np.ceil(radius * 1.3)) + 5  # the largest marker (triangle, 1.3 r) with a margin
        centre = side // 2
        canvas = Image.new("RGBA", (side, side), (0, 0, 0, 0))
        draw_marker(ImageDraw.Draw(canvas), centre, centre, radius, shape, tuple(fill))
        rgba = np.asarray(canvas)
        ys, xs = np.nonzero(rgba[..., 3])
        assert 0 < ys.min() and ys.max() < side - 1 and 0 < xs.min() and xs.max() < side - 1, "stamp canvas too small"
        self.offsets = np.stack([ys - centre, xs - centre], 1)
        self.colours = rgba[ys, xs, :3]
        self.margin = centre  # pixels a marker reaches from its centre, at most


def nearest_pixel(v: np.ndarray) -> np.ndarray:
    """The thumbnail pixel a coordinate falls on, halves rounded up (not Python's round-half-even)."""
    return np.floor(np.asarray(v, np.float64) + 0.5).astype(np.int64)


class Overlay:
    def __init__(self, slide: SlideReader, classes: tuple[str, ...], max_side: int = 1024) -> None:
        w0, h0 = slide.level_dimensions[0]
        self.scale = max(w0, h0) / max_side if max(w0, h0) > max_side else 1.0  # level-0 px per overlay px
        self.pixels = np.array(read_thumbnail(slide, self.scale))  # the markers are drawn onto it
        self.classes = classes
        self.colours = class_colours(classes)
        self.counts = np.zeros(len(classes), np.int64)
        self.radius = max(2.0, 3.0 / self.scale)
        self.stamps = [Stamp(self.radius, MARKERS[i % len(MARKERS)], c) for i, c in enumerate(self.colours)]
        self.stamp_starts = np.cumsum([0] + [len(stamp.offsets) for stamp in self.stamps]).astype(np.int64)
        self.stamp_offsets = np.ascontiguousarray(np.concatenate([stamp.offsets for stamp in self.stamps]), np.int64)
        self.stamp_colours = np.ascontiguousarray(np.concatenate([stamp.colours for stamp in self.stamps]), np.uint8)

    @property
    def thumbnail(self) -> Image.Image:
        """The thumbnail with the markers drawn so far."""
        return Image.fromarray(self.pixels)

    def add(self, nuclei: Nuclei) -> None:
        self.add_points(nuclei.xy, nuclei.class_id)

    def add_points(self, xy: np.ndarray, labels: np.ndarray, native: bool = True) -> None:
        """A marker at each level-0 ``xy [N, 2]`` in the colour and shape of its label (an index into the classes),
        later markers over earlier ones; what :meth:`add_points_reference` draws. ``native=False``: numpy only."""
        labels = self._checked(labels)
        centres = nearest_pixel(np.asarray(xy, np.float64).reshape(-1, 2) / self.scale)  # (x, y)
        self.pixels = np.ascontiguousarray(self.pixels)  # both paths write through a flat view of the rows
        if not (native and self._paste_native(centres, labels)):
            self._paste_numpy(centres, labels)
        self.counts += np.bincount(labels, minlength=len(self.classes))[: len(self.classes)]

    def _paste_native(self, centres: np.ndarray, labels: np.ndarray) -> bool:
        """The stamps pasted by the native library; False (nothing done) where it is not built."""
        from muse_fast.errors import BackendUnavailable
        from muse_fast.kernels import native

        try:
            lib = native.library("cpu")
        except BackendUnavailable:
            return False
        self.pixels = np.ascontiguousarray(self.pixels, np.uint8)  # the library writes rows of h x w x 3 bytes
        centres, labels = np.ascontiguousarray(centres, np.int64), np.ascontiguousarray(labels, np.int64)
        h, w = self.pixels.shape[:2]
        native.call(lib, "muse_paste_stamps", self.pixels.ctypes.data, h, w, centres.ctypes.data, labels.ctypes.data,
                    len(labels), self.stamp_offsets.ctypes.data, self.stamp_colours.ctypes.data,
                    self.stamp_starts.ctypes.data, len(self.stamps))  # fmt: skip
        return True

    def _paste_numpy(self, centres: np.ndarray, labels: np.ndarray) -> None:
        """The stamps pasted with numpy: every marker's pixels in drawing order, the last one on each pixel kept."""
        order, rows, cols, colours = [], [], [], []
        span = max(len(stamp.offsets) for stamp in self.stamps)
        for c, stamp in enumerate(self.stamps):
            which = np.flatnonzero(labels == c)
            if len(which) == 0:
                continue
            k = len(stamp.offsets)
            order.append((which[:, None] * span + np.arange(k)[None, :]).ravel())  # marker, then its pixel order
            rows.append((centres[which, 1][:, None] + stamp.offsets[None, :, 0]).ravel())
            cols.append((centres[which, 0][:, None] + stamp.offsets[None, :, 1]).ravel())
            colours.append(np.broadcast_to(stamp.colours, (len(which), k, 3)).reshape(-1, 3))
        if order:
            h, w = self.pixels.shape[:2]
            order, rows, cols, colours = (np.concatenate(a) for a in (order, rows, cols, colours))
            inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
            flat = (rows * w + cols)[inside]
            ranked = np.argsort(order[inside], kind="stable")
            flat, colours = flat[ranked], colours[inside][ranked]
            _, last = np.unique(flat[::-1], return_index=True)  # each pixel takes the last marker drawn on it
            last = len(flat) - 1 - last
            self.pixels.reshape(-1, 3)[flat[last]] = colours[last]

    def _checked(self, labels: np.ndarray) -> np.ndarray:
        labels = np.asarray(labels, np.int64)
        if len(labels) and (labels.min() < 0 or labels.max() >= len(self.classes)):
            raise ValueError(f"class ids {labels.min()}..{labels.max()} outside the {len(self.classes)} classes")
        return labels

    def add_points_reference(self, xy: np.ndarray, labels: np.ndarray) -> None:
        """:meth:`add_points` one PIL call per marker (the reference path), on a canvas with a margin so that markers
        on the edge are cut where the thumbnail ends (PIL rasterises polygons that cross an image's edge otherwise)."""
        margin = max(stamp.margin for stamp in self.stamps)
        h, w = self.pixels.shape[:2]
        image = Image.new("RGB", (w + 2 * margin, h + 2 * margin))
        image.paste(self.thumbnail, (margin, margin))
        draw = ImageDraw.Draw(image)
        labels = self._checked(labels)
        for (x, y), c in zip(nearest_pixel(np.asarray(xy, np.float64).reshape(-1, 2) / self.scale), labels):
            shape = MARKERS[c % len(MARKERS)]
            draw_marker(draw, int(x) + margin, int(y) + margin, self.radius, shape, self.colours[c])
        self.pixels = np.array(image)[margin : margin + h, margin : margin + w]
        self.counts += np.bincount(labels, minlength=len(self.classes))[: len(self.classes)]

    def mark_unreadable(self, regions: list[list[int]]) -> None:
        """Outline level-0 boxes ``[x, y, w, h]`` whose image data could not be decoded, crossed in black."""
        if not regions:
            return
        image = self.thumbnail
        draw = ImageDraw.Draw(image)
        for x, y, w, h in regions:
            box = (x / self.scale, y / self.scale, (x + w) / self.scale, (y + h) / self.scale)
            draw.rectangle(box, outline=UNREADABLE_COLOUR, width=2)
            draw.line(box, fill=UNREADABLE_COLOUR, width=1)
            draw.line((box[0], box[3], box[2], box[1]), fill=UNREADABLE_COLOUR, width=1)
        self.pixels = np.array(image)

    def legend_lines(self) -> list[str]:
        """The legend's text: ``"<class>  <count>"`` per class, then ``"<total> nuclei"``."""
        lines = [f"{printable(name)}  {int(n):,}" for name, n in zip(self.classes, self.counts)]  # no bidi controls
        return lines + [f"{int(self.counts.sum()):,} nuclei"]

    @property
    def image(self) -> Image.Image:
        """The overlay: the thumbnail with its dots, and below it a legend (each class's dot, name and count; total)."""
        lines = self.legend_lines()
        font = text_font(LEGEND_FONT_PX, lines)
        line_h = LEGEND_FONT_PX + 6
        pad, dot = 8, LEGEND_FONT_PX // 2
        text_w = max(int(font.getlength(t)) for t in lines)
        width = max(self.pixels.shape[1], pad * 3 + 2 * dot + text_w)
        height = self.pixels.shape[0] + pad * 2 + line_h * len(lines)
        canvas = Image.new("RGB", (width, height), LEGEND_BACKGROUND)
        thumbnail = self.thumbnail
        canvas.paste(thumbnail, (0, 0))
        draw = ImageDraw.Draw(canvas)
        for i, text in enumerate(lines):
            top = thumbnail.height + pad + i * line_h
            if i < len(self.colours):
                cy = top + line_h // 2
                draw_marker(draw, pad + dot, cy, dot, MARKERS[i % len(MARKERS)], self.colours[i])
            draw.text((pad * 2 + 2 * dot, top + 2), text, fill=LEGEND_TEXT, font=font)
        return canvas

    def as_array(self) -> np.ndarray:
        return np.asarray(self.image)
