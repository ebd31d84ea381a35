"""Reading a region at a target resolution: level choice and resampling in one place."""

from __future__ import annotations

from concurrent.futures import CancelledError, Future

import numpy as np
from PIL import Image

from .blocks import BlockCache
from .native_output import checked_read
from .readers.base import SlideReader


def choose_level(downsamples: list[float], target_downsample: float) -> int:
    """The coarsest level that is still at least as fine as ``target_downsample`` (tolerance 1%)."""
    best = 0
    for i, d in enumerate(downsamples):
        if d <= target_downsample * 1.01 and d >= downsamples[best]:
            best = i
    return best


def read_plan(slide: SlideReader, size: int, scale: float) -> tuple[int, int]:
    """(level, side in level pixels) to read for a ``size`` output tile at ``scale`` level-0 pixels per pixel."""
    level = choose_level(slide.level_downsamples, scale)
    return level, max(1, round(size * scale / slide.level_downsamples[level]))


def to_size(region: np.ndarray, size: int) -> np.ndarray:
    """Resize a square region to ``size`` (bilinear, antialiased when shrinking); no-op at the right size."""
    if region.shape[0] == size and region.shape[1] == size:
        return region
    return np.asarray(Image.fromarray(region).resize((size, size), Image.BILINEAR))


def strips(origins: list[tuple[int, int]], read: int, downsample: float) -> list[list[int]]:
    """Indices of ``origins`` grouped into horizontal strips that one region read can serve.

    A strip is a run of origins on one row (same level-0 y), each at most ``read`` level pixels right of the one
    before (overlapping or touching tiles, as a tile grid's rows are) and a whole number of level pixels from the
    strip's first, so that every tile is an exact slice of the strip's region.
    """
    out: list[list[int]] = []
    for i in sorted(range(len(origins)), key=lambda i: (origins[i][1], origins[i][0])):
        x, y = origins[i]
        if out:
            fx, fy = origins[out[-1][0]]
            px = origins[out[-1][-1]][0]
            offset = (x - fx) / downsample
            if y == fy and 0 < x - px <= read * downsample and offset == int(offset):
                out[-1].append(i)
                continue
        out.append([i])
    return out


def _read_strip(
    slide: SlideReader, origins: list[tuple[int, int]], read: int, level: int, cache: BlockCache | None = None
) -> list[np.ndarray]:
    """The ``read``-px squares at ``origins`` (one strip, see :func:`strips`) as slices of one region read (from
    ``cache``'s level-0 blocks when given)."""
    d = slide.level_downsamples[level]
    x0, y0 = origins[0]
    offsets = [round((x - x0) / d) for x, _ in origins]
    if cache is not None:
        region = cache.region(x0, y0, offsets[-1] + read, read)
    else:
        region = slide.read_region(x0, y0, offsets[-1] + read, read, level)
    return [region[:, o : o + read] for o in offsets]


def settle(futures: list[Future]) -> None:
    """Wait until each future has finished or was cancelled.

    Not ``concurrent.futures.wait``: a future cancelled by ``shutdown(cancel_futures=True)`` (an interrupt or a failed
    write, see :func:`~muse_fast.runtime.executors.cancel_on_error`) never counts as done for it, and the reader would
    wait forever.
    """
    for future in futures:
        try:
            future.exception()
        except CancelledError:
            pass


def read_tiles(
    slide: SlideReader,
    origins: list[tuple[int, int]],
    size: int,
    scale: float,
    pool,
    cache: BlockCache | None = None,
) -> list[np.ndarray]:
    """Tiles at level-0 ``origins``, each ``size`` px at ``scale``: a row of neighbouring tiles in one region read
    (a tiled file then decodes each of its tiles once, not once per overlapping tile; with ``cache``, once for the
    rows above and below too), the rest batched in the backend when it can, else threaded.

    The result is identical to calling :func:`read_at_scale` for each origin.
    """
    level, read = read_plan(slide, size, scale)
    cache = cache if level == 0 else None  # the cache holds level 0 only
    groups = strips(origins, read, slide.level_downsamples[level])
    if len(groups) < len(origins) or cache is not None:
        futures = [pool.submit(_read_strip, slide, [origins[i] for i in g], read, level, cache) for g in groups]
        settle(futures)  # as below: every read has finished before a failure is raised
        out: list[np.ndarray | None] = [None] * len(origins)
        for group, future in zip(groups, futures):
            for i, region in zip(group, future.result()):
                out[i] = to_size(region, size)
        return out
    if hasattr(slide, "read_regions") and len(origins) > 1:
        regions = slide.read_regions(origins, read, level, getattr(pool, "_max_workers", 1))
        return [to_size(r, size) for r in regions]
    futures = [pool.submit(read_at_scale, slide, x, y, size, scale) for x, y in origins]
    settle(futures)  # all reads finish before a failure is raised, so none is still running when the caller retries
    return [f.result() for f in futures]


def read_at_scale(slide: SlideReader, x0: int, y0: int, size: int, scale: float) -> np.ndarray:
    """Read a ``size x size`` RGB tile whose level-0 footprint is ``size * scale`` pixels square at (x0, y0).

    ``scale`` is level-0 pixels per output pixel (model mpp / slide mpp). Shrinking is antialiased (PIL's
    bilinear filter widens its support when downscaling); an exact-size read is returned as is.
    """
    level, read = read_plan(slide, size, scale)
    return to_size(slide.read_region(x0, y0, read, read, level), size)


THUMBNAIL_BAND_BYTES = 64 << 20  # read budget per band when a thumbnail must come from a large level


def read_thumbnail(slide: SlideReader, downsample: float) -> np.ndarray:
    """The whole slide at ``downsample`` level-0 pixels per pixel, with bounded memory.

    Reads the coarsest level fine enough; when that level is much larger than the thumbnail (a slide without a
    pyramid), it is read and shrunk in horizontal bands, so memory never holds more than a band of the level.
    """
    level = choose_level(slide.level_downsamples, downsample)
    w, h = slide.level_dimensions[level]
    w0, h0 = slide.level_dimensions[0]
    out_w, out_h = max(1, round(w0 / downsample)), max(1, round(h0 / downsample))
    rows_per_out = h / out_h  # level rows per thumbnail row
    band_out = max(1, int(THUMBNAIL_BAND_BYTES / (3 * w * max(rows_per_out, 1.0))))
    d = slide.level_downsamples[level]
    bands = []
    for r0 in range(0, out_h, band_out):
        r1 = min(out_h, r0 + band_out)
        y0, y1 = round(r0 * rows_per_out), round(r1 * rows_per_out)
        region = _read_band(slide, round(y0 * d), w, max(1, y1 - y0), level)
        bands.append(np.asarray(Image.fromarray(region).resize((out_w, r1 - r0), Image.BILINEAR)))
    return np.concatenate(bands, axis=0)


UNREADABLE_COLOUR = (128, 0, 128)  # stands in for damaged pixels in views: counts as tissue, so tiles are planned
THUMBNAIL_BLOCK = 256  # level pixels per block when a band must be re-read around damaged data


def _read_band(slide: SlideReader, y0: int, w: int, h: int, level: int) -> np.ndarray:
    """A full-width band of ``level``; where the backend cannot decode it, UNREADABLE_COLOUR blocks.

    Damaged data must not look like glass here (cuCIM decodes it to flat grey), or the tissue mask would leave it
    out and the damage would go unnoticed: painted as tissue, its tiles are planned and the tile reads
    (:mod:`.checked_read`) name them.
    """
    band, reason = checked_read(slide.read_region, 0, y0, w, h, level)
    if reason is None:
        return band
    d = slide.level_downsamples[level]
    band = np.empty((h, w, 3), np.uint8)
    for r0 in range(0, h, THUMBNAIL_BLOCK):
        for c0 in range(0, w, THUMBNAIL_BLOCK):
            r1, c1 = min(h, r0 + THUMBNAIL_BLOCK), min(w, c0 + THUMBNAIL_BLOCK)
            block, reason = checked_read(slide.read_region, round(c0 * d), y0 + round(r0 * d), c1 - c0, r1 - r0, level)
            band[r0:r1, c0:c1] = UNREADABLE_COLOUR if reason else block
    return band
