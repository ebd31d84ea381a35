import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from qupath import points_by_class, rectangle, write_qupath  # noqa: E402

NAMES = ["Immune cells", "Tumor", "Stroma"]  # BRCA-M2C's lymphocyte, tumor, stromal under QuPath's class names


@pytest.fixture(scope="session")
def brca_tiles(brca_dir):
    """Four BRCA-M2C train tiles (PNG at 0.5 um/px, no resolution tag) with their dots."""
    from muse_fast.train.data.brca import load_split

    images = load_split("train", brca_dir)[:4]
    return [(brca_dir / "images" / f"{im.name}.png", im) for im in images]


def annotate(folder: Path, tiles, every: int = 1, regions: bool = False, legacy: bool = False) -> list[Path]:
    """QuPath exports for ``tiles`` (every ``every``-th dot; with ``regions`` the whole tile as a complete region)."""
    folder.mkdir(parents=True, exist_ok=True)
    for _, im in tiles:
        features = points_by_class(im.xy[::every], im.labels[::every], NAMES, legacy)
        if regions:
            h, w = im.image.shape[:2]
            features.append(rectangle(0, 0, w, h))
        write_qupath(folder / f"{im.name}.geojson", features, legacy)
    return [path for path, _ in tiles]
