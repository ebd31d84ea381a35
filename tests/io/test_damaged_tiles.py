"""A real SVS with damaged JPEG tiles (valid header and pyramid, garbage or zeros in the tile data).

Every backend must name exactly the tiles whose reads touch damaged data, and never hand their pixels on.
"""

from concurrent.futures import ThreadPoolExecutor

import pytest
from damaged_slides import damage_svs

from muse_fast.io.checked_read import read_tiles_checked
from muse_fast.io.native_output import capture_native_output
from muse_fast.io.readers import open_slide
from muse_fast.io.resample import UNREADABLE_COLOUR, read_thumbnail

SIZE = 224


def _touches(origin, boxes) -> bool:
    x, y = origin
    return any(x < bx + bw and bx < x + SIZE and y < by + bh and by < y + SIZE for bx, by, bw, bh in boxes)


@pytest.fixture(scope="module", params=["random", "zeros"])
def damaged(request, cmu_svs, tmp_path_factory):
    path = tmp_path_factory.mktemp("damaged") / f"damaged-{request.param}.svs"
    return path, damage_svs(cmu_svs, path, fill=request.param), request.param


@pytest.mark.parametrize("backend", ["cucim", "openslide", "tiffslide"])
def test_damaged_tiles_are_named_on_every_backend(damaged, backend):
    path, boxes, fill = damaged
    pytest.importorskip(backend, reason=f"{backend} is not installed")
    if backend == "tiffslide" and fill == "zeros":
        pytest.skip("imagecodecs decodes zero-filled JPEG without an error, a known tiffslide limit (docs/usage.md)")
    origins = [(x, y) for y in range(0, 2967 - SIZE, 200) for x in range(0, 2220 - SIZE, 200)]
    expected = {i for i, o in enumerate(origins) if _touches(o, boxes)}
    with capture_native_output(), ThreadPoolExecutor(2) as pool:
        slide = open_slide(path, backend)
        found: dict[int, str] = {}
        for start in range(0, len(origins), 16):
            images, bad = read_tiles_checked(slide, origins[start : start + 16], SIZE, 1.0, pool)
            found.update({start + i: reason for i, reason in bad.items()})
            for i in bad:
                assert (images[i] == 255).all()  # damaged pixels are never passed on
    assert set(found) == expected
    assert all(reason and len(reason.splitlines()) == 1 for reason in found.values())


@pytest.mark.parametrize("backend", ["cucim", "openslide", "tiffslide"])
def test_intact_slide_reads_report_nothing(cmu_svs, backend):
    pytest.importorskip(backend, reason=f"{backend} is not installed")
    origins = [(x, y) for y in range(0, 2967 - SIZE, 400) for x in range(0, 2220 - SIZE, 400)]
    with capture_native_output(), ThreadPoolExecutor(2) as pool:
        _, bad = read_tiles_checked(open_slide(cmu_svs, backend), origins, SIZE, 1.0, pool)
    assert bad == {}


@pytest.mark.parametrize("backend", ["cucim", "openslide"])
def test_thumbnail_of_a_damaged_single_level_slide_marks_the_damage(damaged, backend):
    """OpenSlide raises on the whole-level read and cuCIM decodes damage to flat grey, which the tissue mask would
    take for glass: the damaged blocks are painted UNREADABLE_COLOUR (tissue) instead, so their tiles get read."""
    path, boxes, _ = damaged
    pytest.importorskip(backend, reason=f"{backend} is not installed")
    with capture_native_output():
        view = read_thumbnail(open_slide(path, backend), 1.0)
    assert view.shape[:2] == (2967, 2220)
    for x, y, w, h in boxes:
        assert (view[y : y + h, x : x + w] == UNREADABLE_COLOUR).all(axis=-1).mean() > 0.99
    assert (view == UNREADABLE_COLOUR).all(axis=-1).mean() < 0.15  # only blocks around the damage
