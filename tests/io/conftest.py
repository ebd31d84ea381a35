"""Synthetic pyramidal TIFFs written by tifffile once per session (style rule 8)."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image


@dataclass(frozen=True)
class Synthetic:
    path: Path
    source: np.ndarray  # level-0 pixels written into the file
    mpp: float | None
    lossless: bool
    levels: int


def _source(h: int, w: int) -> np.ndarray:
    """Smooth pink/purple blobs on white, like H&E at low power (JPEG-friendly)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    stain = np.zeros((h, w))
    for _ in range(40):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(20, 120)
        stain = np.maximum(stain, np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r)))
    white, purple = np.array([245, 242, 245]), np.array([150, 60, 160])
    rgb = white + stain[..., None] * (purple - white)
    return np.clip(rgb + rng.normal(0, 2, rgb.shape), 0, 255).astype(np.uint8)


def _pyramid(image: np.ndarray, levels: int) -> list[np.ndarray]:
    out = [image]
    for _ in range(levels - 1):
        h, w = out[-1].shape[:2]
        out.append(np.asarray(Image.fromarray(out[-1]).resize((w // 2, h // 2), Image.BOX)))
    return out


def _write_pages(
    path,
    levels,
    description,
    compression,
    photometric,
    tile,
    resolution=None,
    thumbnail=False,
    reduced_subfiletype=True,
):
    """Levels as successive tiled pages (reduced-resolution subfile type after the first), the way scanners do.

    ``thumbnail`` puts a small stripped page after level 0, as in Aperio SVS files.
    """
    with tifffile.TiffWriter(path, bigtiff=False) as tif:
        for i, level in enumerate(levels):
            kwargs = {"resolution": resolution, "resolutionunit": "CENTIMETER"} if resolution else {}
            if resolution and i:
                kwargs["resolution"] = (resolution[0] / 2**i, resolution[1] / 2**i)
            tif.write(
                level,
                tile=(tile, tile),
                compression=compression,
                photometric=photometric,
                description=description if i == 0 else None,
                metadata=None,
                subfiletype=1 if i and reduced_subfiletype else 0,
                **kwargs,
            )
            if thumbnail and i == 0:
                thumb = np.asarray(Image.fromarray(level).resize((256, 192)))
                tif.write(thumb, compression="jpeg", photometric="rgb", metadata=None)


@pytest.fixture(scope="session")
def synthetic_slides(tmp_path_factory) -> dict[str, Synthetic]:
    root = tmp_path_factory.mktemp("slides")
    src = _source(1536, 2048)
    out = {}
    # Aperio-style SVS: JPEG tiles (tifffile's default YCbCr), MPP in the description, levels as pages
    path = root / "aperio.svs"
    desc = "Aperio Image Library v12.0.0\n2048x1536 [0,0 2048x1536] (256x256) JPEG/RGB Q=90|AppMag = 40|MPP = 0.25"
    _write_pages(path, _pyramid(src, 3), desc, "jpeg", "rgb", 256, thumbnail=True, reduced_subfiletype=False)
    out["svs_jpeg_ycbcr"] = Synthetic(path, src, 0.25, False, 3)
    # generic tiled TIFF, deflate, RGB, resolution tags in centimetres (0.5 um/px = 20000 px/cm)
    path = root / "generic_deflate.tif"
    _write_pages(path, _pyramid(src, 2), None, "zlib", "rgb", 512, resolution=(20000.0, 20000.0))
    out["tiff_deflate_rgb"] = Synthetic(path, src, 0.5, True, 2)
    # the same without any resolution: mpp must come from --mpp
    path = root / "no_resolution.tif"
    _write_pages(path, _pyramid(src, 2), None, "zlib", "rgb", 256)
    out["tiff_no_mpp"] = Synthetic(path, src, None, True, 2)
    return out
