"""Readers on real slides and images, and one-line errors on bad input."""

import logging

import numpy as np
import pytest
from PIL import Image

from muse_fast.errors import ConfigError, InputError
from muse_fast.io.readers import READERS, open_slide
from muse_fast.io.resample import choose_level, read_at_scale

SVS_BACKENDS = ["cucim", "openslide", "tiffslide"]


def _available(backend, path):
    try:
        return open_slide(path, reader=backend)
    except InputError as exc:
        pytest.skip(f"{backend} cannot open {path.name} here: {exc}")


@pytest.mark.parametrize("backend", SVS_BACKENDS)
def test_svs_metadata(cmu_svs, backend):
    slide = _available(backend, cmu_svs)
    assert slide.backend == backend
    assert slide.level_dimensions[0] == (2220, 2967)
    assert slide.mpp == pytest.approx(0.499)


@pytest.mark.parametrize("backend", ["cucim", "tiffslide"])
def test_backends_decode_the_same_pixels_as_openslide(cmu_svs, backend):
    ref = open_slide(cmu_svs, reader="openslide")
    slide = _available(backend, cmu_svs)
    rng = np.random.default_rng(0)
    for _ in range(5):
        x, y = int(rng.integers(0, 2000)), int(rng.integers(0, 2700))
        a, b = slide.read_region(x, y, 200, 200), ref.read_region(x, y, 200, 200)
        assert a.shape == b.shape == (200, 200, 3) and a.dtype == np.uint8
        # same libjpeg-turbo decode in all three here; allow +-2 for IDCT differences between decoder builds
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 2


@pytest.mark.parametrize("backend", SVS_BACKENDS)
def test_regions_outside_the_slide_are_white(cmu_svs, backend):
    slide = _available(backend, cmu_svs)
    region = slide.read_region(2200, 2950, 40, 40)
    inside = slide.read_region(2200, 2950, 20, 17)
    np.testing.assert_array_equal(region[:17, :20], inside)
    assert (region[17:] == 255).all() and (region[:, 20:] == 255).all()
    assert (slide.read_region(-50, -50, 10, 10) == 255).all()


def test_png_has_no_mpp_unless_given(brca_dir):
    path = next((brca_dir / "images").glob("*.png"))
    slide = open_slide(path)
    assert slide.backend == "image" and slide.mpp is None
    assert open_slide(path, mpp=0.5).mpp == 0.5
    w, h = slide.level_dimensions[0]
    np.testing.assert_array_equal(slide.read_region(0, 0, w, h), np.asarray(Image.open(path).convert("RGB")))


def test_png_with_dpi_gives_mpp(tmp_path):
    path = tmp_path / "tile.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path, dpi=(50800, 50800))
    assert open_slide(path).mpp == pytest.approx(0.5)


def test_read_at_scale_resamples_to_the_requested_size(cmu_svs):
    slide = open_slide(cmu_svs)
    assert read_at_scale(slide, 100, 100, 64, 1.0).shape == (64, 64, 3)
    assert read_at_scale(slide, 100, 100, 64, 2.0).shape == (64, 64, 3)
    assert choose_level([1.0, 4.0, 16.0], 5.0) == 1 and choose_level([1.0, 4.0], 0.5) == 0


def test_bad_inputs_are_one_line_errors(tmp_path):
    cases = {
        "missing": (tmp_path / "nope.svs", "not found"),
        "empty": (tmp_path / "empty.svs", "0 bytes"),
        "text": (tmp_path / "notes.svs", "cannot read"),
        "suffix": (tmp_path / "slide.xyz", "unsupported"),
    }
    (tmp_path / "empty.svs").touch()
    (tmp_path / "notes.svs").write_text("this is not a slide\n" * 20)
    (tmp_path / "slide.xyz").write_text("x")
    for path, message in cases.values():
        with pytest.raises(InputError, match=message) as info:
            open_slide(path)
        assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="choose one of"):
        open_slide(tmp_path / "notes.svs", reader="bioformats")
    assert set(READERS) == {"cucim", "openslide", "tiffslide", "image"}


def test_truncated_svs_is_refused(cmu_svs, tmp_path):
    from muse_fast.cli import main

    cut = tmp_path / "cut.svs"
    cut.write_bytes(cmu_svs.read_bytes()[:1_000_000])
    with pytest.raises(InputError) as info:
        open_slide(cut)
    assert "\n" not in str(info.value)
    out = tmp_path / "out"
    assert main(["infer", str(cut), "--out", str(out), "--quiet"]) == 2
    assert not out.exists() or not any(out.iterdir())  # the folder may be made up front; nothing is written in it


def test_tile_data_past_the_end_is_reported(tmp_path):
    import tifffile

    from muse_fast.io.metadata import truncation_problem

    path = tmp_path / "t.tif"
    tifffile.imwrite(path, np.zeros((512, 512, 3), np.uint8), tile=(256, 256), compression="zlib")
    assert truncation_problem(path) is None
    with tifffile.TiffFile(path) as tif:
        end = max(o + n for o, n in zip(tif.pages[0].dataoffsets, tif.pages[0].databytecounts))
        ifd = tif.pages[0].offset
    if ifd < end - 10:  # the directory precedes the last tile: cut inside the tile data
        data = path.read_bytes()
        path.write_bytes(data[: end - 10])
        assert "needs" in truncation_problem(path)


def test_a_header_claiming_more_tiles_than_it_records_is_refused_at_open(tmp_path):
    """A 196-KB TIFF whose header claims 200000 x 200000 px stalled the run for many minutes (thumbnail band
    re-reads of 600,000 missing tiles) instead of failing."""
    import tifffile

    from muse_fast.io.metadata import truncation_problem

    path = tmp_path / "huge.tif"
    tifffile.imwrite(path, np.full((256, 256, 3), 200, np.uint8), tile=(256, 256), photometric="rgb")
    assert truncation_problem(path) is None
    with tifffile.TiffFile(path, mode="r+") as tif:
        tif.pages[0].tags["ImageWidth"].overwrite(200_000)
        tif.pages[0].tags["ImageLength"].overwrite(200_000)
    assert "claims 200000 x 200000 px in 611,524 tiles or strips but records 1" in truncation_problem(path)
    with pytest.raises(InputError, match="huge.tif is truncated or damaged"):
        open_slide(path)


def test_non_square_pixels_are_refused(tmp_path):
    import tifffile

    path = tmp_path / "aniso.tif"
    tifffile.imwrite(
        path,
        np.full((64, 64, 3), 200, np.uint8),
        resolution=(20000.0, 10000.0),
        resolutionunit="CENTIMETER",
        metadata=None,
    )
    with pytest.raises(InputError, match="non-square"):
        open_slide(path)
    assert open_slide(path, mpp=0.5).mpp == 0.5  # an explicit --mpp overrides


def test_ome_tiff_resolution_comes_from_ome_metadata(ome_tif):
    slide = open_slide(ome_tif)  # OpenSlide cannot decode this file's YCbCr JPEG tiles; auto finds another backend
    assert slide.backend in ("cucim", "tiffslide")
    assert slide.mpp == pytest.approx(0.2271, abs=1e-4)
    assert slide.level_dimensions[0] == (1101, 1101)
    region = slide.read_region(500, 500, 64, 64)
    assert region.shape == (64, 64, 3) and region.std() > 5  # real tissue, not a blank decode


def test_thumbnail_is_read_in_bands_with_bounded_memory(cmu_svs, monkeypatch):
    import muse_fast.io.resample as resample

    slide = open_slide(cmu_svs)
    whole = resample.read_thumbnail(slide, 8.0)
    assert whole.shape == (round(2967 / 8), round(2220 / 8), 3)
    monkeypatch.setattr(resample, "THUMBNAIL_BAND_BYTES", 2220 * 3 * 8 * 10)  # bands of 10 thumbnail rows
    banded = resample.read_thumbnail(slide, 8.0)
    assert banded.shape == whole.shape
    assert np.abs(banded.astype(int) - whole).mean() < 2  # only the rows at band seams differ slightly


def test_a_backend_that_decodes_other_colours_is_passed_over(ome_tif):
    """cuCIM returns OS-1's JPEG tiles without the YCbCr->RGB step (green tissue); tiffslide decodes them right."""
    pytest.importorskip("cucim", reason="cuCIM is not installed")
    with pytest.raises(InputError, match="decodes colours unlike"):
        open_slide(ome_tif, reader="cucim")
    slide = open_slide(ome_tif)
    reference = open_slide(ome_tif, reader="tiffslide")
    assert slide.backend != "cucim"
    np.testing.assert_array_equal(slide.read_region(0, 0, 512, 512), reference.read_region(0, 0, 512, 512))
    r, g, b = slide.read_region(0, 0, 512, 512).reshape(-1, 3).mean(0)
    assert b > g and r > g  # H&E is pink-purple, not green


def test_an_mpp_far_from_what_the_file_records_is_said_once(cmu_svs, caplog):
    """A cohort's --mpp silently ran a slide that records its own resolution at the wrong scale."""
    with caplog.at_level(logging.WARNING):
        recorded = open_slide(cmu_svs).mpp
        assert open_slide(cmu_svs, mpp=recorded * 1.05).mpp == recorded * 1.05  # within 10%: a correction, quiet
        assert not caplog.records
        assert open_slide(cmu_svs, mpp=0.25).mpp == 0.25
    assert len(caplog.records) == 1 and f"records {recorded:.4g} um/px; --mpp 0.25 overrides it" in caplog.text


@pytest.mark.parametrize("dpi", [72, 96, 300])
@pytest.mark.parametrize("backend", SVS_BACKENDS)
def test_placeholder_dpi_is_no_resolution_on_any_backend(tmp_path, caplog, backend, dpi):
    """OpenSlide and tiffslide turned a TIFF's default 72 dpi into 352.8 um/px (and warned against --mpp 0.5)."""
    import tifffile

    path = tmp_path / "placeholder.tif"
    image = np.full((512, 512, 3), 200, np.uint8)
    tifffile.imwrite(path, image, tile=(256, 256), resolution=(dpi, dpi), resolutionunit="INCH", photometric="rgb")
    assert _available(backend, path).mpp is None
    with caplog.at_level(logging.WARNING):
        assert open_slide(path, backend, mpp=0.5).mpp == 0.5
    assert "overrides it" not in caplog.text
