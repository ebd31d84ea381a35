"""A cache of aligned level-0 blocks, so that neighbouring rows of tiles decode each stored tile of a file once.

A tiled slide (JPEG tiles of 256 px, say) decodes every stored tile a region touches. Rows of model tiles overlap and
their strips (:func:`.resample.strips`) straddle the file's tile rows, so without a cache each stored tile is decoded
about twice, by the strip above and the strip below. :class:`BlockCache` reads level 0 in squares aligned with the
file's own tiles (:func:`stored_tile_size`; a block of another size would straddle them and decode more, not less),
keeps the most recent ones (``max_bytes``), and assembles each region from them: pixel for pixel what one
``read_region`` returns, since a stored pixel does not depend on the window that asked for it.

Blocks read during a batch are kept only once the batch's reads are known to be undamaged (:meth:`batch`): a block
whose decode complained must be decoded again, so that the complaint names the tiles of every batch that uses it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .readers.base import SlideReader

BLOCK = 256  # level-0 pixels: the tile size of most pyramidal TIFF files
MAX_BYTES = 64 << 20  # about two rows of blocks across a 40x slide's tissue


def stored_tile_size(path: Path) -> int | None:
    """The side of a TIFF-family file's square level-0 tiles (Aperio SVS often 240, others 256 or 512); None when
    level 0 is not tiled in squares or the file is not a TIFF (no block cache then)."""
    try:
        import tifffile

        with tifffile.TiffFile(str(path)) as tif:
            page = tif.series[0].levels[0].keyframe
            width, length = int(page.tilewidth), int(page.tilelength)
    except Exception:  # noqa: BLE001 - not a TIFF, or one tifffile cannot parse: read without the cache
        return None
    return width if width == length and width > 0 else None


def block_cache(slide: SlideReader) -> BlockCache | None:
    """A :class:`BlockCache` in the slide's own tile size; none for a plain image (in memory already) or a file
    whose level 0 is not tiled in squares."""
    size = None if slide.backend == "image" else stored_tile_size(slide.path)
    return BlockCache(slide, size) if size else None


class BlockCache:
    """Aligned level-0 blocks of one slide (module doc); safe to share between reader threads."""

    def __init__(self, slide: SlideReader, block: int = BLOCK, max_bytes: int | None = None) -> None:
        self.slide, self.block = slide, block
        self.max_blocks = max(4, (MAX_BYTES if max_bytes is None else max_bytes) // (block * block * 3))
        self.top_row: int | None = None  # the highest row of blocks the current batch asked for
        self.active = False  # inside batch(): only then are blocks read kept (pending) at all
        self.kept: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self.pending: dict[tuple[int, int], np.ndarray] = {}  # read during the current batch
        self.lock = threading.Lock()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Reads of one batch: their blocks are kept when :meth:`keep` is called, dropped otherwise."""
        with self.lock:
            self.pending, self.top_row, self.active = {}, None, True
        try:
            yield
        finally:
            with self.lock:
                self.pending, self.active = {}, False

    def keep(self) -> None:
        """The current batch's reads were undamaged: keep its blocks; drop the rows above the batch's (batches go
        down the slide row by row, so no later batch reads them), then the oldest beyond the budget."""
        with self.lock:
            if self.top_row is not None:
                for key in [key for key in self.kept if key[0] < self.top_row]:
                    del self.kept[key]
            for key, block in self.pending.items():
                self.kept[key] = block
                self.kept.move_to_end(key)
            self.pending = {}
            while len(self.kept) > self.max_blocks:
                self.kept.popitem(last=False)

    def _cached(self, key: tuple[int, int]) -> np.ndarray | None:
        with self.lock:
            found = self.kept.get(key)
            if found is not None:
                self.kept.move_to_end(key)
                return found
            return self.pending.get(key)

    def region(self, x: int, y: int, width: int, height: int) -> np.ndarray:
        """Level-0 pixels ``[y, y + height) x [x, x + width)``, as ``slide.read_region(x, y, width, height, 0)``."""
        b = self.block
        with self.lock:
            self.top_row = y // b if self.top_row is None else min(self.top_row, y // b)
        out = np.empty((height, width, 3), np.uint8)
        cols = range(x // b, (x + width - 1) // b + 1)
        for row in range((y // b), (y + height - 1) // b + 1):
            blocks = {col: self._cached((row, col)) for col in cols}
            missing = [col for col, found in blocks.items() if found is None]
            for first, last in _runs(missing):  # one read per run of neighbouring missing blocks
                strip = self.slide.read_region(first * b, row * b, (last - first + 1) * b, b, 0)
                for col in range(first, last + 1):
                    blocks[col] = np.ascontiguousarray(strip[:, (col - first) * b : (col - first + 1) * b])
                with self.lock:
                    if self.active:
                        self.pending.update({(row, col): blocks[col] for col in range(first, last + 1)})
            r0, r1 = max(y, row * b), min(y + height, (row + 1) * b)
            for col, block in blocks.items():
                c0, c1 = max(x, col * b), min(x + width, (col + 1) * b)
                out[r0 - y : r1 - y, c0 - x : c1 - x] = block[r0 - row * b : r1 - row * b, c0 - col * b : c1 - col * b]
        return out


def _runs(cols: list[int]) -> list[tuple[int, int]]:
    """Sorted integers as (first, last) runs of consecutive values."""
    runs: list[tuple[int, int]] = []
    for col in sorted(cols):
        if runs and col == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], col)
        else:
            runs.append((col, col))
    return runs
