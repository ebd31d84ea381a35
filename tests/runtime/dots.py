"""A synthetic slide of coloured dots and an engine that finds them, to test the runtime without a network.

Dots are 3x3 squares of pure red, green or blue on white at known positions; the engine's centre logit is the
darkness of each stride-4 cell, its offsets the darkness-weighted centroid inside the cell, and its point features
are the tile's colours (repeated up to ``feature_dim`` channels), classified by the dominant one (red 0, green 1,
blue 2).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
import torch
import torch.nn.functional as F

from muse_fast.model.registry import DenseOutputs
from muse_fast.model.weights import WeightsMeta

META = WeightsMeta("dots", ("red", "green", "blue"), 0.5, 224)
COLOURS = np.array([[170, 0, 0], [0, 170, 0], [0, 0, 170]], np.uint8)


def dot_positions(width: int, height: int, spacing: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A jittered grid of integer dot centres (x, y) and their classes."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[4 : height - 4 : spacing, 4 : width - 4 : spacing]
    xy = np.stack([xs.ravel(), ys.ravel()], 1) + rng.integers(-2, 3, size=(xs.size, 2))
    xy = np.clip(xy, 2, [width - 3, height - 3])
    return xy.astype(np.int64), rng.integers(0, 3, len(xy))


def write_dot_slide(path: Path, width: int, height: int, xy: np.ndarray, cls: np.ndarray, tile: int = 256) -> None:
    """A tiled, deflate-compressed TIFF at 0.5 um/px, generated tile by tile (never the whole image in memory)."""
    order = np.argsort(xy[:, 1] // tile * 10**6 + xy[:, 0] // tile)
    keys = (xy[order, 1] // tile) * 10**6 + xy[order, 0] // tile

    def tiles():
        for ty in range(0, height, tile):
            for tx in range(0, width, tile):
                block = np.full((tile, tile, 3), 255, np.uint8)
                lo, hi = np.searchsorted(
                    keys, [(ty // tile) * 10**6 + tx // tile, (ty // tile) * 10**6 + tx // tile + 1]
                )
                for i in order[lo:hi]:
                    x, y = xy[i] - (tx, ty)
                    block[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2] = COLOURS[cls[i]]
                yield block

    with tifffile.TiffWriter(path) as tif:
        tif.write(
            tiles(),
            shape=(height, width, 3),
            dtype=np.uint8,
            tile=(tile, tile),
            compression="zlib",
            photometric="rgb",
            resolution=(20000.0, 20000.0),
            resolutionunit="CENTIMETER",
            metadata=None,
        )


class DotEngine:
    """The runtime's Engine interface, finding the dots of :func:`write_dot_slide` exactly."""

    name = "dots"
    device = torch.device("cpu")

    def __init__(self, fail_at_call: int | None = None, feature_dim: int = 3) -> None:
        self.calls = 0
        self.fail_at_call = fail_at_call
        self.feature_dim = feature_dim

    def run(self, tiles: np.ndarray) -> DenseOutputs:
        self.calls += 1
        if self.fail_at_call is not None and self.calls >= self.fail_at_call:
            raise RuntimeError("simulated crash")
        x = torch.from_numpy(tiles).permute(0, 3, 1, 2).float()
        dark = 255.0 - x.mean(1, keepdim=True)  # [B,1,H,W]
        b, _, h, w = dark.shape
        cells = dark.reshape(b, 1, h // 4, 4, w // 4, 4)
        mass = cells.sum(dim=(3, 5))
        pos = torch.arange(4.0) + 0.5
        cx = (cells.sum(3) * pos).sum(-1) / mass.clamp(min=1e-6)
        cy = (cells.sum(5) * pos[:, None]).sum(-2) / mass.clamp(min=1e-6)
        centre = torch.cat([mass / 16.0 - 20.0, (cx - 0.5) / 4, (cy - 0.5) / 4], dim=1)
        colours = F.avg_pool2d(x, 4)
        return DenseOutputs(centre, colours.repeat(1, -(-self.feature_dim // 3), 1, 1)[:, : self.feature_dim])

    def classify(self, feats: torch.Tensor) -> torch.Tensor:
        colours = feats[..., :3]
        return colours - colours.mean(-1, keepdim=True)
