import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from dots import dot_positions, write_dot_slide  # noqa: E402


@pytest.fixture(scope="session")
def dot_slide(tmp_path_factory):
    """A 1000 x 800 slide at 0.5 um/px with ~3000 dots on a jittered 16-px grid (many on tile and core borders)."""
    path = tmp_path_factory.mktemp("dots") / "dots.tif"
    xy, cls = dot_positions(1000, 800, 16)
    write_dot_slide(path, 1000, 800, xy, cls)
    return path, xy, cls


@pytest.fixture(scope="session")
def small_dots(tmp_path_factory):
    """A 500 x 400 dot slide: 6 tiles, 3 batches of 2, so every step of a run is quick to reach."""
    path = tmp_path_factory.mktemp("small") / "dots.tif"
    xy, cls = dot_positions(500, 400, 16)
    write_dot_slide(path, 500, 400, xy, cls)
    return path
