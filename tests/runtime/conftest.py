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
