"""A slide-sized test image from BRCA-M2C: its 120 images side by side in one pyramidal tiled TIFF at 0.5 um/px.

    python benchmarks/brca_mosaic.py OUT.tif [--cell 512] [--columns 11] [--repeat 1] [--tile 256] [--quality 90]

BRCA-M2C's PNGs are TCGA breast cancer regions resampled to 20x, 0.5 um/px (``$MUSE_DATA/brca-m2c/README.md``). Each
image is centred in a white ``cell`` x ``cell`` square (glass between the pieces, as between tissue fragments on a
slide), in sorted name order, ``columns`` squares per row, all images ``repeat`` times. Written with tifffile as a
generic tiled TIFF: JPEG tiles (YCbCr), the resolution in the TIFF's resolution tags (20000 px/cm = 0.5 um/px), level
0 and 2x-downsampled levels down to about 1000 px as reduced-resolution pages, so every slide reader opens it as a
pyramid with its mpp. Prints one JSON line: the size, the levels and the tissue area of the pieces.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

MPP = 0.5
PX_PER_CM = 1e4 / MPP


def data_dir() -> Path:
    return Path(os.environ.get("MUSE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "brca-m2c"


def mosaic(images: list[Path], cell: int, columns: int) -> np.ndarray:
    """The images centred in white cells, row by row."""
    rows = -(-len(images) // columns)
    canvas = np.full((rows * cell, columns * cell, 3), 255, np.uint8)
    for i, path in enumerate(images):
        pixels = np.asarray(Image.open(path).convert("RGB"))
        h, w = pixels.shape[:2]
        if h > cell or w > cell:
            raise SystemExit(f"{path.name} is {w}x{h} px, larger than --cell {cell}; pass a larger --cell")
        y, x = (i // columns) * cell + (cell - h) // 2, (i % columns) * cell + (cell - w) // 2
        canvas[y : y + h, x : x + w] = pixels
    return canvas


def pyramid(level0: np.ndarray, smallest: int = 1000) -> list[np.ndarray]:
    levels = [level0]
    while max(levels[-1].shape[:2]) // 2 >= smallest:
        h, w = levels[-1].shape[:2]
        levels.append(np.asarray(Image.fromarray(levels[-1]).resize((w // 2, h // 2), Image.Resampling.BOX)))
    return levels


def write_pyramid(path: Path, levels: list[np.ndarray], tile: int, quality: int) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    with tifffile.TiffWriter(tmp, bigtiff=False) as tif:
        for i, level in enumerate(levels):
            tif.write(
                level,
                tile=(tile, tile),
                compression="jpeg",
                compressionargs={"level": quality},
                photometric="rgb",
                resolution=(PX_PER_CM / 2**i, PX_PER_CM / 2**i),
                resolutionunit="CENTIMETER",
                subfiletype=1 if i else 0,
                metadata=None,
            )
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--cell", type=int, default=512)
    parser.add_argument("--columns", type=int, default=11)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--quality", type=int, default=90)
    args = parser.parse_args()
    images = sorted((data_dir() / "images").glob("*.png"))
    if not images:
        raise SystemExit(f"no BRCA-M2C images in {data_dir() / 'images'}; set MUSE_DATA to the data folder")
    images = images * args.repeat
    levels = pyramid(mosaic(images, args.cell, args.columns))
    write_pyramid(args.out, levels, args.tile, args.quality)
    pieces_px = sum(np.prod(Image.open(p).size) for p in images)
    print(
        json.dumps(
            {
                "path": str(args.out),
                "images": len(images),
                "mpp": MPP,
                "levels": [list(level.shape[1::-1]) for level in levels],
                "pieces_mm2": round(float(pieces_px) * MPP**2 / 1e6, 3),
                "bytes": args.out.stat().st_size,
            }
        )
    )


if __name__ == "__main__":
    main()
