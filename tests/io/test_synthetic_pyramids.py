"""Every backend over synthetic pyramids (JPEG/YCbCr SVS, deflate RGB TIFF, TIFF without resolution)."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from muse_fast.errors import InputError
from muse_fast.io.readers import open_slide
from muse_fast.io.resample import read_at_scale, read_tiles, strips

BACKENDS = ["cucim", "openslide", "tiffslide"]
FILES = ["svs_jpeg_ycbcr", "tiff_deflate_rgb", "tiff_no_mpp"]


@pytest.fixture(params=[(f, b) for f in FILES for b in BACKENDS], ids=lambda p: f"{p[0]}-{p[1]}")
def slide_case(request, synthetic_slides):
    name, backend = request.param
    synthetic = synthetic_slides[name]
    try:
        slide = open_slide(synthetic.path, reader=backend)
    except InputError as exc:
        pytest.skip(f"{backend} cannot read {name} here: {exc}")
    yield synthetic, slide
    slide.close()


def test_levels_and_resolution(slide_case):
    synthetic, slide = slide_case
    h, w = synthetic.source.shape[:2]
    assert slide.level_dimensions[0] == (w, h)
    assert len(slide.level_dimensions) == synthetic.levels
    assert slide.level_downsamples == pytest.approx([2.0**i for i in range(synthetic.levels)])
    assert slide.mpp == (pytest.approx(synthetic.mpp) if synthetic.mpp else None)


def test_pixels_match_the_source(slide_case):
    synthetic, slide = slide_case
    region = slide.read_region(300, 200, 256, 256)
    source = synthetic.source[200:456, 300:556].astype(int)
    if synthetic.lossless:
        np.testing.assert_array_equal(region, source)
    else:  # JPEG (quality 75, YCbCr 2x2): mean error a few grey levels
        assert np.abs(region.astype(int) - source).mean() < 4


def test_border_regions_are_padded_white(slide_case):
    synthetic, slide = slide_case
    h, w = synthetic.source.shape[:2]
    region = slide.read_region(w - 100, h - 50, 256, 256)
    np.testing.assert_array_equal(region[:50, :100], slide.read_region(w - 100, h - 50, 100, 50))
    assert (region[50:] == 255).all() and (region[:, 100:] == 255).all()
    level1 = slide.read_region(w - 64, h - 64, 64, 64, 1)  # 32 level-1 pixels inside, 32 outside
    assert level1.shape == (64, 64, 3) and (level1[32:] == 255).all() and (level1[:, 32:] == 255).all()


def test_batched_reads_equal_single_reads(slide_case):
    synthetic, slide = slide_case
    rng = np.random.default_rng(1)
    h, w = synthetic.source.shape[:2]
    origins = [(int(rng.integers(0, w)), int(rng.integers(0, h))) for _ in range(9)] + [(w - 10, h - 10)]
    for scale in (1.0, 1.7, 2.0):
        with ThreadPoolExecutor(3) as pool:
            batched = read_tiles(slide, origins, 96, scale, pool)
        for (x, y), tile in zip(origins, batched):
            np.testing.assert_array_equal(tile, read_at_scale(slide, x, y, 96, scale))


def test_rows_of_a_tile_grid_are_read_as_strips_with_the_same_pixels(slide_case):
    synthetic, slide = slide_case
    h, w = synthetic.source.shape[:2]
    for scale in (1.0, 1.7, 2.0):
        step = round(80 * scale)  # 96-px tiles overlapping by 16, as infer's grid
        origins = [(x, y) for y in (0, step, h - 40) for x in range(0, w, step)][::-1]  # border rows, any order
        with ThreadPoolExecutor(2) as pool:
            got = read_tiles(slide, origins, 96, scale, pool)
        for (x, y), tile in zip(origins, got):
            np.testing.assert_array_equal(tile, read_at_scale(slide, x, y, 96, scale))


def test_strips_group_only_exact_neighbours_on_one_row():
    origins = [(0, 0), (80, 0), (160, 0), (400, 0), (480, 0), (80, 80), (0, 80), (577, 0)]
    assert strips(origins, 96, 1.0) == [[0, 1, 2], [3, 4], [7], [6, 5]]
    assert strips([(0, 0), (96, 0), (97, 0)], 96, 1.0) == [[0, 1, 2]]
    assert strips([(0, 0), (97, 0)], 96, 1.0) == [[0], [1]]  # a gap: glass between is not read
    assert strips([(0, 0), (81, 0), (160, 0)], 48, 2.0) == [[0], [1], [2]]  # 40.5 level pixels apart: not exact
    assert strips([(0, 0), (80, 0)], 48, 2.0) == [[0, 1]]


@pytest.mark.parametrize("backend", ["cucim", "tiffslide"])
def test_backends_agree_with_openslide(synthetic_slides, backend):
    pytest.importorskip(backend, reason=f"{backend} is not installed (the README's install command installs it)")
    for name in FILES:
        path = synthetic_slides[name].path
        ref = open_slide(path, reader="openslide").read_region(100, 100, 300, 300)
        got = open_slide(path, reader=backend).read_region(100, 100, 300, 300)
        # all three link libjpeg-turbo / zlib here: identical decodes observed; allow +-1 for other builds
        assert np.abs(got.astype(int) - ref).max() <= 1, (name, backend)


def test_missing_resolution_needs_mpp(synthetic_slides, tmp_path):
    from muse_fast.cli import main

    path = synthetic_slides["tiff_no_mpp"].path
    assert open_slide(path).mpp is None
    assert open_slide(path, mpp=0.5).mpp == 0.5
    assert main(["infer", str(path), "--out", str(tmp_path), "--quiet"]) == 2
    assert not any(tmp_path.iterdir())
