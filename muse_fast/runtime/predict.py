"""Tiled prediction on in-memory images: tiles -> engine -> decode -> ownership filter -> nuclei."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ..io.tiling import Tile, tile_grid
from ..post.decode import DecodeConfig, decode_batch
from .engines import Engine


@dataclass
class Nuclei:
    """Nuclei as numpy arrays; ``xy`` in the coordinates of the frame they were produced for."""

    xy: np.ndarray  # [N, 2] float64 (x, y)
    score: np.ndarray  # [N] float32
    class_id: np.ndarray  # [N] int64
    class_prob: np.ndarray  # [N] float32

    @staticmethod
    def empty() -> Nuclei:
        return Nuclei(np.zeros((0, 2)), np.zeros(0, np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32))

    @staticmethod
    def concat(parts: Iterable[Nuclei]) -> Nuclei:
        parts = list(parts)
        if not parts:
            return Nuclei.empty()
        return Nuclei(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in ("xy", "score", "class_id", "class_prob"))
        )

    def __len__(self) -> int:
        return len(self.score)


def crop_tile(image: np.ndarray, tile: Tile, size: int, pad_value: int = 255) -> np.ndarray:
    """``size x size`` crop at the tile origin; parts outside the image are ``pad_value`` (white background)."""
    out = np.full((size, size, 3), pad_value, dtype=np.uint8)
    part = image[tile.y : tile.y + size, tile.x : tile.x + size]
    out[: part.shape[0], : part.shape[1]] = part
    return out


def decode_tiles(engine: Engine, tiles: list[Tile], batch: np.ndarray, cfg: DecodeConfig, stride: int) -> Nuclei:
    """Run one batch of tiles and keep each tile's nuclei inside its core, in model pixels of the whole image."""
    dense = engine.run(batch)
    per_tile = decode_batch(dense.centre, dense.fmap, engine.classify, batch.shape[1:3], stride, cfg)
    kept = []
    for tile, nuc in zip(tiles, per_tile):
        xy = nuc.xy.cpu().numpy().astype(np.float64) + (tile.x, tile.y)
        own = tile.owns(xy)
        kept.append(
            Nuclei(
                xy[own],
                nuc.score.cpu().numpy()[own],
                nuc.class_id.cpu().numpy()[own],
                nuc.class_prob.cpu().numpy()[own],
            )
        )
    return Nuclei.concat(kept)


def predict_image(
    engine: Engine,
    image: np.ndarray,
    tile_size: int,
    overlap: int,
    cfg: DecodeConfig,
    batch_size: int = 16,
    stride: int = 4,
) -> Nuclei:
    """Nuclei of an RGB ``uint8 [H, W, 3]`` image already at the model's mpp (coordinates in its pixels)."""
    h, w = image.shape[:2]
    tiles = tile_grid(w, h, tile_size, overlap)
    parts = []
    for i in range(0, len(tiles), batch_size):
        chunk = tiles[i : i + batch_size]
        batch = np.stack([crop_tile(image, t, tile_size) for t in chunk])
        parts.append(decode_tiles(engine, chunk, batch, cfg, stride))
    return Nuclei.concat(parts)
