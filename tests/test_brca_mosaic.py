"""benchmarks/brca_mosaic.py: BRCA-M2C images as one pyramidal JPEG TIFF that every slide reader opens at 0.5 um/px."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from muse_fast.io.readers import open_slide

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("brca_mosaic", REPO / "benchmarks" / "brca_mosaic.py")
brca_mosaic = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(brca_mosaic)


@pytest.mark.parametrize("backend", ["tiffslide", "openslide", "cucim"])
def test_the_mosaic_is_a_pyramid_with_its_resolution_and_the_images_in_place(brca_dir, tmp_path, backend):
    images = sorted((brca_dir / "images").glob("*.png"))[:5]
    cell, columns = 512, 3
    levels = brca_mosaic.pyramid(brca_mosaic.mosaic(images, cell, columns), smallest=300)
    path = tmp_path / "mosaic.tif"
    brca_mosaic.write_pyramid(path, levels, tile=256, quality=90)
    slide = open_slide(path, backend, None)
    try:
        assert slide.mpp == pytest.approx(0.5)
        assert slide.level_dimensions == [(1536, 1024), (768, 512), (384, 256)]
        last = Image.open(images[4])  # row 1, column 1: centred in its cell
        w, h = last.size
        x, y = cell + (cell - w) // 2, cell + (cell - h) // 2
        read = slide.read_region(x, y, w, h, 0).astype(int)
        error = np.abs(read - np.asarray(last.convert("RGB"), int)).mean()
        shifted = np.abs(slide.read_region(x + 2, y, w, h, 0).astype(int) - np.asarray(last.convert("RGB"), int))
        assert error < 5 and shifted.mean() > 2 * error  # JPEG (YCbCr 4:2:0) at quality 90, and in its place
        glass = slide.read_region(2 * cell, cell, 64, 64, 0)  # the sixth cell has no image
        assert glass.min() >= 250
    finally:
        slide.close()
    assert not list(tmp_path.glob(".*partial"))
