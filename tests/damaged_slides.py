"""Damaged copies of a real SVS: valid header and pyramid, garbage or zeros in chosen JPEG tiles."""

from pathlib import Path

import numpy as np
import tifffile

DAMAGED_TILES = (40, 41, 55)  # indices into the level-0 JPEG tiles of CMU-1-Small-Region.svs (240 px tiles)


def damage_svs(source: Path, target: Path, tiles=DAMAGED_TILES, fill: str = "random") -> list[tuple[int, ...]]:
    """Copy ``source`` and overwrite the entropy-coded data of ``tiles``; returns their level-0 boxes (x, y, w, h)."""
    target.write_bytes(source.read_bytes())
    with tifffile.TiffFile(source) as tif:
        page = tif.pages[0]
        offsets, counts = page.dataoffsets, page.databytecounts
        across = -(-page.imagewidth // page.tilewidth)
        tw, th = page.tilewidth, page.tilelength
    rng = np.random.default_rng(0)
    with open(target, "r+b") as fh:
        for i in tiles:
            n = counts[i] - 210  # keep the JPEG header (first 200 bytes) and the end-of-image marker
            fh.seek(offsets[i] + 200)
            fh.write(rng.integers(0, 256, n, dtype=np.uint8).tobytes() if fill == "random" else bytes(n))
    return [((i % across) * tw, (i // across) * th, tw, th) for i in tiles]
