"""Reads through the block cache (:mod:`muse_fast.io.blocks`) against direct reads, on every backend."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from muse_fast.errors import InputError
from muse_fast.io.blocks import BlockCache, stored_tile_size
from muse_fast.io.checked_read import read_tiles_checked
from muse_fast.io.readers import open_slide
from muse_fast.io.resample import read_at_scale

BACKENDS = ["cucim", "openslide", "tiffslide"]
FILES = ["svs_jpeg_ycbcr", "tiff_deflate_rgb"]


@pytest.fixture(params=[(f, b) for f in FILES for b in BACKENDS], ids=lambda p: f"{p[0]}-{p[1]}")
def slide(request, synthetic_slides):
    name, backend = request.param
    try:
        opened = open_slide(synthetic_slides[name].path, reader=backend)
    except InputError as exc:
        pytest.skip(f"{backend} cannot read {name} here: {exc}")
    yield opened
    opened.close()


class CountingSlide:
    """A slide whose level-0 region reads are recorded."""

    def __init__(self, slide) -> None:
        self.slide, self.reads = slide, []

    def __getattr__(self, name):
        return getattr(self.slide, name)

    def read_region(self, x, y, w, h, level=0):
        if level == 0:
            self.reads.append((x, y, w, h))
        return self.slide.read_region(x, y, w, h, level)


def grid_batches(w: int, h: int, scale: float, batch: int = 7) -> list[list[tuple[int, int]]]:
    """96-px tiles overlapping by 16 (as infer's grid), starting off the top-left edge, row-major, in batches."""
    step = round(80 * scale)
    origins = [(x, y) for y in range(-step // 2, h, step) for x in range(-step // 2, w, step)]
    return [origins[i : i + batch] for i in range(0, len(origins), batch)]


@pytest.mark.parametrize("scale", [1.0, 1.7, 2.0])  # level 0 as is, level 0 resized, level 1 (not cached)
def test_cached_reads_are_direct_reads(slide, scale):
    w, h = slide.level_dimensions[0]
    counting = CountingSlide(slide)
    cache = BlockCache(counting, stored_tile_size(slide.path))
    block = cache.block
    with ThreadPoolExecutor(2) as pool:
        for origins in grid_batches(w, h, scale):
            tiles, bad = read_tiles_checked(counting, origins, 96, scale, pool, cache)
            assert bad == {}
            for (x, y), tile in zip(origins, tiles):
                np.testing.assert_array_equal(tile, read_at_scale(slide, x, y, 96, scale))
    if scale < 2:  # level 0: every block decoded once, although each row of tiles overlaps the next
        blocks = [(x + i * block, y) for x, y, bw, _ in counting.reads for i in range(bw // block)]
        assert all(bh == block and x % block == 0 and y % block == 0 for x, y, _, bh in counting.reads)
        assert len(blocks) == len(set(blocks)) > 0
    else:
        assert cache.kept == {}


def test_a_damaged_batch_keeps_no_blocks(slide):
    class Failing(CountingSlide):
        def read_region(self, x, y, w, h, level=0):
            if self.reads:  # the first read succeeds, the rest fail
                raise OSError("corrupt JPEG data")  # as a backend reports a damaged tile
            return super().read_region(x, y, w, h, level)

    failing = Failing(slide)
    cache = BlockCache(failing)
    with ThreadPoolExecutor(1) as pool:
        tiles, bad = read_tiles_checked(failing, [(0, 0), (80, 0), (160, 0), (0, 300), (80, 300)], 96, 1.0, pool, cache)
    assert bad  # the per-tile reads after the failure name the damaged tiles
    assert cache.kept == {} and cache.pending == {}


def test_the_cache_keeps_at_most_its_budget(slide):
    w, h = slide.level_dimensions[0]
    block = stored_tile_size(slide.path)
    cache = BlockCache(slide, block, max_bytes=6 * block * block * 3)
    with cache.batch():
        region = cache.region(0, 0, w, 2 * block)
        cache.keep()
    np.testing.assert_array_equal(region, slide.read_region(0, 0, w, 2 * block))
    assert len(cache.kept) == 6


def test_blocks_of_a_batch_are_dropped_unless_kept(slide):
    cache = BlockCache(slide, 256)
    with cache.batch():
        cache.region(10, 10, 300, 100)
        assert len(cache.pending) == 2
    assert cache.kept == {} and cache.pending == {}
    cache.region(10, 10, 300, 100)  # outside a batch: nothing is kept, so nothing piles up
    assert cache.kept == {} and cache.pending == {}


def test_rows_above_the_batch_are_dropped(slide):
    cache = BlockCache(slide, 256)
    for y in (0, 300, 600):  # three batches going down the slide
        with cache.batch():
            cache.region(0, y, 500, 96)
            cache.keep()
    assert {row for row, _ in cache.kept} == {600 // 256}


def test_the_block_is_the_files_own_tile(synthetic_slides, cmu_svs, ome_tif, tmp_path):
    """Aperio's 240-px tiles, OME-TIFF's 512, the synthetic files' own; none for a plain image or a missing file."""
    from PIL import Image

    assert stored_tile_size(cmu_svs) == 240 and stored_tile_size(ome_tif) == 512
    assert {stored_tile_size(s.path) for s in synthetic_slides.values()} <= {256, 512}
    Image.new("RGB", (300, 200), (200, 100, 150)).save(tmp_path / "plain.png")
    assert stored_tile_size(tmp_path / "plain.png") is None
    assert stored_tile_size(tmp_path / "missing.svs") is None


@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_cached_reads_of_a_real_aperio_slide(cmu_svs, scale):
    """240-px JPEG tiles with partial blocks at the right and bottom edges, on each backend that reads it."""
    for backend in BACKENDS:
        try:
            slide = open_slide(cmu_svs, reader=backend)
        except InputError:
            continue
        try:
            w, h = slide.level_dimensions[0]
            cache = BlockCache(slide, stored_tile_size(cmu_svs))
            with ThreadPoolExecutor(2) as pool:
                for origins in grid_batches(w, h, scale, batch=16)[::3]:
                    tiles, bad = read_tiles_checked(slide, origins, 96, scale, pool, cache)
                    assert bad == {}
                    for (x, y), tile in zip(origins, tiles):
                        np.testing.assert_array_equal(tile, read_at_scale(slide, x, y, 96, scale))
        finally:
            slide.close()


def test_a_cancelled_read_is_not_taken_for_damage(slide):
    """Reads cancelled because the run is stopping raise at once: no tile-by-tile re-read hunting for damage."""
    from concurrent.futures import CancelledError

    from muse_fast.io.native_output import checked_read

    def cancelled():
        raise CancelledError

    with pytest.raises(CancelledError):
        checked_read(cancelled)
