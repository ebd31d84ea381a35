"""Deep-zoom tiles of a slide, read on demand through the project's readers (so every format ``infer`` reads works).

Levels follow the Deep Zoom convention: level ``top = ceil(log2(max(width, height)))`` is full resolution and each
level below halves it, down to 1 pixel at level 0. Tile ``(level, col, row)`` is ``TILE`` pixels of that level, less
at the right and bottom edges; it is read from the finest pyramid level no finer than needed and resized, or, where
the slide has no level near that zoom (a plain or single-level image), cut from a thumbnail read once in bands.
"""

from __future__ import annotations

import io
import math
import threading
from collections import OrderedDict
from pathlib import Path

from PIL import Image

from ..io.readers import open_slide
from ..io.resample import read_thumbnail

TILE = 256
JPEG_QUALITY = 85
CACHE_TILES = 512
THUMBNAIL_SIDE = 4096  # coarse tiles of slides without a pyramid come from a thumbnail this size
COARSE_READ = 4  # read from the slide only when its nearest level is at most this much finer than the tile


class TileRequestError(ValueError):
    """A tile that does not exist (level or position out of range)."""


class DeepZoom:
    """JPEG tiles of one slide; thread-safe (one reader, reads serialised), with a small LRU cache."""

    def __init__(self, path: Path) -> None:
        self.slide = open_slide(path)
        self.width, self.height = self.slide.level_dimensions[0]
        self.top = max(0, math.ceil(math.log2(max(self.width, self.height))))
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[int, int, int], bytes] = OrderedDict()
        self._thumb: tuple[Image.Image, float] | None = None

    def level_size(self, level: int) -> tuple[int, int]:
        ds = 2 ** (self.top - level)
        return max(1, math.ceil(self.width / ds)), max(1, math.ceil(self.height / ds))

    def tile(self, level: int, col: int, row: int) -> bytes:
        if not 0 <= level <= self.top:
            raise TileRequestError(f"level {level} outside 0..{self.top}")
        w, h = self.level_size(level)
        if not (0 <= col < math.ceil(w / TILE) and 0 <= row < math.ceil(h / TILE)):
            raise TileRequestError(f"tile {col},{row} outside level {level} ({w}x{h} px)")
        key = (level, col, row)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            data = self._render(level, col, row, w, h)
            self._cache[key] = data
            if len(self._cache) > CACHE_TILES:
                self._cache.popitem(last=False)
        return data

    def _thumbnail(self) -> tuple[Image.Image, float]:
        """The whole slide at most ``THUMBNAIL_SIDE`` px a side (read once, in bands), and its downsample."""
        if self._thumb is None:
            ds = max(1.0, max(self.width, self.height) / THUMBNAIL_SIDE)
            self._thumb = (Image.fromarray(read_thumbnail(self.slide, ds)), ds)
        return self._thumb

    def _render(self, level: int, col: int, row: int, w: int, h: int) -> bytes:
        ds = 2 ** (self.top - level)  # level-0 px per tile px
        tw, th = min(TILE, w - col * TILE), min(TILE, h - row * TILE)
        x0, y0 = col * TILE * ds, row * TILE * ds
        source = max((i for i, d in enumerate(self.slide.level_downsamples) if d <= ds * 1.01), default=0)
        sd = self.slide.level_downsamples[source]
        if ds / sd > COARSE_READ and ds >= max(self.width, self.height) / THUMBNAIL_SIDE:
            # no pyramid level near this zoom: cut the tile from the thumbnail instead of reading ds^2 more pixels
            thumb, td = self._thumbnail()
            tw0, th0 = thumb.size  # the last tile of a level may reach past the slide's edge by under a pixel
            box = (x0 / td, y0 / td, min(tw0, (x0 + tw * ds) / td), min(th0, (y0 + th * ds) / td))
            image = thumb.resize((tw, th), Image.BOX, box=box)
        else:
            sw = max(1, math.ceil(tw * ds / sd))
            sh = max(1, math.ceil(th * ds / sd))
            image = Image.fromarray(self.slide.read_region(int(x0), int(y0), sw, sh, source))
        if image.size != (tw, th):
            image = image.resize((tw, th), Image.BILINEAR if ds / sd < 4 else Image.BOX)
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=JPEG_QUALITY)
        return buf.getvalue()

    def close(self) -> None:
        self.slide.close()
