"""Odd pixel formats: 16-bit, grayscale, CMYK, palette, alpha. Every backend matches the plain image reader or refuses.

The files are written here with tifffile and PIL from a real BRCA-M2C tile.
"""

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from muse_fast.errors import InputError
from muse_fast.io.readers import open_slide

TIFF_BACKENDS = ["auto", "cucim", "openslide", "tiffslide", "image"]
TRANSPARENT_COLUMNS = 200  # the RGBA files are fully transparent left of this column


@pytest.fixture(scope="module")
def rgb(brca_dir) -> np.ndarray:
    first = sorted((brca_dir / "images").glob("*.png"))[0]
    tile = np.asarray(Image.open(first).convert("RGB"))
    return np.ascontiguousarray(np.concatenate([tile, tile], axis=1)[:480, :960])


@pytest.fixture(scope="module")
def files(rgb, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("formats")
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    alpha[:, :TRANSPARENT_COLUMNS] = 0
    palette = Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=256)
    colormap = np.asarray(palette.getpalette()[:768], np.uint16).reshape(256, 3).T * 257
    tiled = {"tile": (128, 128), "metadata": None}
    out = {}

    def tiff(name, data, **kwargs):
        out[name] = root / f"{name}.tif"
        tifffile.imwrite(out[name], data, **tiled, **kwargs)

    tiff("rgb8", rgb, photometric="rgb")
    tiff("rgb16", rgb.astype(np.uint16) * 256 + 77, photometric="rgb")  # 16-bit with low bits set: wraps if cast
    tiff("rgba", np.dstack([rgb, alpha]), photometric="rgb", extrasamples=["unassalpha"])
    tiff("cmyk", np.asarray(Image.fromarray(rgb).convert("CMYK")), photometric="separated")
    tiff("palette", np.asarray(palette), photometric="palette", colormap=colormap)
    tiff("gray", np.asarray(Image.fromarray(rgb).convert("L")), photometric="minisblack")
    for name, image in {
        "rgba_png": Image.fromarray(np.dstack([rgb, alpha])),
        "palette_png": palette,
        "gray_png": Image.fromarray(rgb).convert("L"),
        "gray16_png": Image.fromarray(rgb[..., 0].astype(np.uint16) * 257),
    }.items():
        out[name] = root / f"{name}.png"
        image.save(out[name])
    return out


def _expected(rgb: np.ndarray, name: str) -> np.ndarray:
    if name.startswith("rgba"):
        white = rgb.copy()
        white[:, :TRANSPARENT_COLUMNS] = 255  # alpha 0 is glass
        return white
    if name.startswith("palette"):
        return np.asarray(Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=256).convert("RGB"))
    return rgb


def _open_or_skip(path: Path, backend: str):
    try:
        return open_slide(path, backend, mpp=0.5)
    except InputError as exc:
        if "No module named" in str(exc):
            pytest.skip(f"{backend} is not installed: {exc}")
        raise


@pytest.mark.parametrize("name", ["rgb8", "rgb16", "rgba", "cmyk", "palette"])
@pytest.mark.parametrize("backend", TIFF_BACKENDS)
def test_colour_tiffs_read_as_the_image_reader_or_are_refused(files, rgb, name, backend):
    reference = open_slide(files[name], "image", mpp=0.5).read_region(0, 0, 960, 480)
    assert np.abs(reference.astype(int) - _expected(rgb, name)).max() <= 1  # the plain reader itself is right
    try:
        slide = _open_or_skip(files[name], backend)
    except InputError as exc:  # refusing is allowed for an explicit backend, never for auto
        assert backend != "auto", exc
        assert len(str(exc).splitlines()) == 1
        return
    got = slide.read_region(0, 0, 960, 480)
    assert got.dtype == np.uint8 and got.shape == (480, 960, 3)
    assert np.abs(got.astype(int) - reference).max() <= 1, (name, slide.backend)


def test_cucim_is_passed_over_when_it_would_change_the_pixel_format(files):
    pytest.importorskip("cucim", reason="cuCIM is not installed")
    with pytest.raises(InputError, match="changes the pixel format"):
        open_slide(files["rgb16"], "cucim", mpp=0.5)
    assert open_slide(files["rgb16"], "auto", mpp=0.5).backend != "cucim"


@pytest.mark.parametrize("backend", TIFF_BACKENDS)
@pytest.mark.parametrize("name", ["gray", "gray_png", "gray16_png"])
def test_grayscale_is_refused_in_one_line(files, name, backend):
    if files[name].suffix == ".png" and backend not in ("auto", "image"):
        pytest.skip("slide backends do not read PNG")
    with pytest.raises(InputError) as info:
        _open_or_skip(files[name], backend)
    message = str(info.value)
    assert len(message.splitlines()) == 1
    assert "grayscale" in message or "changes the pixel format" in message  # cuCIM refuses before the check


@pytest.mark.parametrize("name", ["rgba_png", "palette_png"])
def test_png_alpha_and_palette(files, rgb, name):
    got = open_slide(files[name], mpp=0.5).read_region(0, 0, 960, 480)
    assert np.abs(got.astype(int) - _expected(rgb, name)).max() <= 1


def test_blank_white_image_is_not_called_grayscale(tmp_path):
    path = tmp_path / "white.png"
    Image.fromarray(np.full((300, 300, 3), 255, np.uint8)).save(path)
    assert open_slide(path, mpp=0.5).backend == "image"
