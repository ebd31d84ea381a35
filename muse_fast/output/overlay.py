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


def draw_marker(
    draw: ImageDraw.ImageDraw,
    x: float,
    y: float,
    r: float,
    shape: str,
    fill: tuple | int,
    rim: tuple | int = DOT_OUTLINE,
) -> None:
    """One nucleus marker of half-size ``r`` centred at ``(x, y)``, with a dark rim."""
    if shape == "circle":
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill, outline=rim)
    elif shape == "square":
        q = r * 0.85  # about the circle's area
        draw.rectangle((x - q, y - q, x + q, y + q), fill=fill, outline=rim)
    elif shape == "diamond":
        q = r * 1.2
        draw.polygon([(x, y - q), (x + q, y), (x, y + q), (x - q, y)], fill=fill, outline=rim)
    else:
        q = r * 1.3
        draw.polygon([(x, y - q), (x + q, y + q * 0.75), (x - q, y + q * 0.75)], fill=fill, outline=rim)


def draw_markers_one_by_one(image: Image.Image, xy: np.ndarray, labels: np.ndarray, r: float, colours: list) -> None:
    """The reference for :func:`draw_markers`: each marker drawn by Pillow in turn."""
    draw = ImageDraw.Draw(image)
    for (x, y), c in zip(xy, labels):
        draw_marker(draw, x, y, r, MARKERS[c % len(MARKERS)], colours[c])


def draw_markers(image: Image.Image, xy: np.ndarray, labels: np.ndarray, r: float, colours: list) -> None:
    """Markers at overlay-px ``xy [N, 2]`` in the colours and shapes of ``labels``, later ones over earlier ones, pixel
    for pixel as :func:`draw_markers_one_by_one` draws them but with numpy: Pillow rasterises a marker from its
    vertices' rounded pixel coordinates, so markers whose vertices round alike relative to their centre's pixel share
    one stamp (drawn by Pillow once, at the first such marker's own coordinates), and the stamps are composited at
    once, the last marker covering a pixel giving its colour."""
    n = len(labels)
    if n == 0:
        return
    w, h = image.size
    xs, ys = xy[:, 0], xy[:, 1]
    shape_of = labels % len(MARKERS)
    pixels, orders, inks = [], [], []
    for s, shape in enumerate(MARKERS):
        members = np.flatnonzero(shape_of == s)
        if len(members) == 0:
            continue
        vx, vy = _vertices(shape, xs[members], ys[members], r)
        ax = _anchor(xs[members], vx)
        ay = _anchor(ys[members], vy)
        key = np.concatenate([_rounded(vx) - ax[:, None], _rounded(vy) - ay[:, None]], 1)
        key = key - key.min(0)
        code = np.zeros(len(members), np.int64)
        for column, span in zip(key.T, key.max(0) + 1):  # the rows as one integer each (mixed radix)
            code = code * span + column
        edge = (vx.min(1) < 0) | (vy.min(1) < 0)  # Pillow's rounding toward zero: each drawn on its own
        code[edge] = code.max() + 1 + np.arange(edge.sum())
        _, first, group = np.unique(code, return_index=True, return_inverse=True)
        order = np.argsort(group, kind="stable")
        bounds = np.searchsorted(group[order], np.arange(len(first) + 1))
        for g, rep in enumerate(first):
            in_group = order[bounds[g] : bounds[g + 1]]
            dx, dy, ink = _stamp(shape, xs[members[rep]], ys[members[rep]], r, vx[rep], vy[rep])
            dx = dx - ax[rep]
            dy = dy - ay[rep]
            if len(dx) == 0:  # wholly outside the image
                continue
            who = members[in_group]
            flat = (ay[in_group] * w + ax[in_group])[:, None] + (dy * w + dx)[None]
            fill = np.where(ink == 2, len(colours), 0).astype(np.int64)
            colour = np.where(ink[None] == 2, fill[None], labels[who][:, None])
            px = ax[in_group][:, None] + dx[None]
            py = ay[in_group][:, None] + dy[None]
            if px.min() < 0 or py.min() < 0 or px.max() >= w or py.max() >= h:
                inside = (px >= 0) & (px < w) & (py >= 0) & (py < h)
                flat, colour = flat[inside], colour[inside]
                who = np.broadcast_to(who[:, None], px.shape)[inside]
            else:
                who = np.repeat(who, px.shape[1])
            pixels.append(flat.reshape(-1))
            orders.append(who.reshape(-1))
            inks.append(colour.reshape(-1))
    pixel = np.concatenate(pixels)
    order = np.concatenate(orders)
    last = np.full(w * h, -1, np.int64)
    np.maximum.at(last, pixel, order)
    wins = last[pixel] == order
    palette = np.array([*colours, DOT_OUTLINE], np.uint8)
    rgb = np.array(image.convert("RGB"))
    rgb.reshape(-1, 3)[pixel[wins]] = palette[np.concatenate(inks)[wins]]
    image.paste(Image.fromarray(rgb))


def _vertices(shape: str, x: np.ndarray, y: np.ndarray, r: float) -> tuple[np.ndarray, np.ndarray]:
    """The coordinates :func:`draw_marker` hands Pillow, computed the same way: ``[n, k]`` x and y."""
    if shape == "circle":
        return np.stack([x - r, x + r], 1), np.stack([y - r, y + r], 1)
    if shape == "square":
        q = r * 0.85
        return np.stack([x - q, x + q], 1), np.stack([y - q, y + q], 1)
    if shape == "diamond":
        q = r * 1.2
        return np.stack([x, x + q, x, x - q], 1), np.stack([y - q, y, y + q, y], 1)
    q = r * 1.3
    return np.stack([x, x + q, x - q], 1), np.stack([y - q, y + q * 0.75, y + q * 0.75], 1)


def _rounded(v: np.ndarray) -> np.ndarray:
    """Each coordinate floored and rounded half up (how Pillow may turn it into a pixel), side by side."""
    return np.concatenate([np.floor(v), np.floor(v + 0.5)], 1).astype(np.int64)


def _anchor(centre: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The centre's pixel."""
    return np.floor(centre).astype(np.int64)


def _stamp(shape: str, x: float, y: float, r: float, vx: np.ndarray, vy: np.ndarray):
    """The pixels Pillow draws for one marker at its own coordinates: x, y and 1 (fill) or 2 (rim) each."""
    size = (max(int(vx.max()) + 3, 1), max(int(vy.max()) + 3, 1))
    canvas = Image.new("L", size, 0)
    draw_marker(ImageDraw.Draw(canvas), float(x), float(y), r, shape, 1, 2)
    top = max(int(np.floor(vy.min())) - 2, 0)
    left = max(int(np.floor(vx.min())) - 2, 0)
    ink = np.asarray(canvas)[top:, left:]
    py, px = np.nonzero(ink)
    return px + left, py + top, ink[py, px]


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
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []  # overlay-px xy and labels, drawn at the next flush

    def flush(self) -> None:
        """Draw the pending markers (all at once, in the order they were added)."""
        if self.pending:
            xy = np.concatenate([p[0] for p in self.pending])
            labels = np.concatenate([p[1] for p in self.pending])
            self.pending = []
            draw_markers(self.thumbnail, xy, labels, self.radius, self.colours)

    def add(self, nuclei: Nuclei) -> None:
        self.add_points(nuclei.xy, nuclei.class_id)

    def add_points(self, xy: np.ndarray, labels: np.ndarray) -> None:
        """A marker at each level-0 ``xy [N, 2]`` in the colour and shape of its label (an index into the classes)."""
        labels = np.asarray(labels, np.int64)
        self.pending.append((np.asarray(xy, np.float64).reshape(-1, 2) / self.scale, labels))
        self.counts += np.bincount(labels, minlength=len(self.classes))[: len(self.classes)]

    def mark_unreadable(self, regions: list[list[int]]) -> None:
        """Outline level-0 boxes ``[x, y, w, h]`` whose image data could not be decoded, crossed in black."""
        self.flush()  # drawn over the markers added before
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
        self.flush()
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
