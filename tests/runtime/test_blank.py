"""The glass test's fast path (:func:`is_blank`, answered from the first rows when it can) against its reference."""

from __future__ import annotations

import numpy as np
import pytest

from muse_fast.io.readers import open_slide
from muse_fast.runtime.pipeline import BLANK_CHROMA, BLANK_FRACTION, BLANK_PROBE_ROWS, is_blank, is_blank_reference

SIZE = 224
NEEDED = int(np.ceil(BLANK_FRACTION * SIZE * SIZE))  # stained pixels that make a tile tissue


def glass(stained: int, rows: slice = slice(None)) -> np.ndarray:
    """A white tile with ``stained`` purple pixels, spread over ``rows``."""
    tile = np.full((SIZE, SIZE, 3), 235, np.uint8)
    region = tile[rows]
    flat = region.reshape(-1, 3)
    flat[np.linspace(0, len(flat) - 1, stained).astype(int)] = (150, 80, 170)
    return tile


@pytest.mark.parametrize("stained", [0, NEEDED - 1, NEEDED, NEEDED + 1, 5 * NEEDED])
@pytest.mark.parametrize("rows", [slice(None), slice(0, BLANK_PROBE_ROWS), slice(SIZE - 10, SIZE), slice(100, 101)])
def test_fast_path_agrees_at_the_threshold(stained: int, rows: slice) -> None:
    tile = glass(min(stained, len(np.arange(SIZE)[rows]) * SIZE), rows)
    assert is_blank(tile) == is_blank_reference(tile)


def test_threshold_is_where_the_fraction_says() -> None:
    assert is_blank(glass(NEEDED - 1)) and not is_blank(glass(NEEDED))
    assert is_blank(glass(NEEDED - 1, slice(0, 2))) and not is_blank(glass(NEEDED, slice(0, 2)))  # all in the probe


def test_faint_chroma_is_glass() -> None:
    tile = np.full((SIZE, SIZE, 3), 200, np.uint8)
    tile[..., 2] += BLANK_CHROMA  # max-min equals the limit: not stained
    assert is_blank(tile) and is_blank_reference(tile)
    tile[0, 0, 2] += 1
    assert is_blank(tile) and is_blank_reference(tile)  # one stained pixel is not enough


def test_agrees_on_every_tile_of_a_real_slide(cmu_svs) -> None:
    """Glass, tissue edges and tissue of OpenSlide's CMU-1-Small-Region, tile by tile, and odd tile shapes."""
    slide = open_slide(cmu_svs, "auto", None)
    try:
        w, h = slide.level_dimensions[0]
        tiles = [slide.read_region(x, y, SIZE, SIZE) for y in range(0, h - SIZE, 160) for x in range(0, w - SIZE, 160)]
        tiles += [slide.read_region(0, 0, 7, 300), slide.read_region(500, 500, 300, 5)]
    finally:
        slide.close()
    verdicts = [is_blank_reference(t) for t in tiles]
    assert any(verdicts) and not all(verdicts), "the slide should hold both glass and tissue tiles"
    assert [is_blank(t) for t in tiles] == verdicts
