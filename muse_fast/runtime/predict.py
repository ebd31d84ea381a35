"""Tiled prediction on in-memory images: tiles -> engine -> decode -> ownership filter -> nuclei."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError
from ..io.tiling import Tile, tile_grid
from ..model.registry import DenseOutputs
from ..post.decode import DecodeConfig, FlatNuclei, decode_flat
from ..post.device_decode import PackedDecoder
from ..post.merge import MergeConfig, duplicates, in_halo, in_own_core
from .engines import Engine


@dataclass
class Nuclei:
    """Nuclei as numpy arrays; ``xy`` in the coordinates of the frame they were produced for."""

    xy: np.ndarray  # [N, 2] float64 (x, y)
    score: np.ndarray  # [N] float32
    class_id: np.ndarray  # [N] int64
    class_prob: np.ndarray  # [N] float32
    tile: np.ndarray | None = None  # [N] int64 index of the tile that produced each nucleus (before merging)
    feat: np.ndarray | None = None  # [N, D] point features, the classifier's input (only when asked for)

    FIELDS = ("xy", "score", "class_id", "class_prob", "tile", "feat")

    @staticmethod
    def empty() -> Nuclei:
        return Nuclei(
            np.zeros((0, 2)),
            np.zeros(0, np.float32),
            np.zeros(0, np.int64),
            np.zeros(0, np.float32),
            np.zeros(0, np.int64),
        )

    @staticmethod
    def concat(parts: Iterable[Nuclei]) -> Nuclei:
        parts = [p for p in parts if len(p)] or [Nuclei.empty()]

        def joined(field: str) -> np.ndarray | None:  # an optional field is None unless every part has it
            arrays = [getattr(p, field) for p in parts]
            return None if any(a is None for a in arrays) else np.concatenate(arrays)

        return Nuclei(*(joined(f) for f in Nuclei.FIELDS))

    def select(self, mask: np.ndarray) -> Nuclei:
        return Nuclei(*(None if getattr(self, f) is None else getattr(self, f)[mask] for f in Nuclei.FIELDS))

    def __len__(self) -> int:
        return len(self.score)


def crop_tile(image: np.ndarray, tile: Tile, size: int, pad_value: int = 255) -> np.ndarray:
    """``size x size`` crop at the tile origin; parts outside the image are ``pad_value`` (white background)."""
    out = np.full((size, size, 3), pad_value, dtype=np.uint8)
    part = image[tile.y : tile.y + size, tile.x : tile.x + size]
    out[: part.shape[0], : part.shape[1]] = part
    return out


def decode_tiles(
    engine: Engine,
    tiles: list[Tile],
    tile_ids: list[int],
    batch: np.ndarray,
    cfg: DecodeConfig,
    stride: int = 4,
    merge: MergeConfig = MergeConfig(),
    features: bool = False,
) -> Nuclei:
    """Run one batch of tiles; keep each tile's nuclei in its core plus the merge margin (model pixels, whole image).

    The result still holds the duplicates of the overlap strips; :mod:`muse_fast.post.merge` resolves them. With
    ``features``, ``Nuclei.feat`` holds each nucleus's point feature (the classifier's input).
    """
    dense = engine.run(batch)
    return nuclei_from_dense(engine, dense, tiles, tile_ids, batch.shape[1:3], cfg, stride, merge, features)


def nuclei_from_dense(
    engine: Engine,
    dense: DenseOutputs,
    tiles: list[Tile],
    tile_ids: list[int],
    input_hw: tuple[int, int],
    cfg: DecodeConfig,
    stride: int = 4,
    merge: MergeConfig = MergeConfig(),
    features: bool = False,
) -> Nuclei:
    """Decode an engine's outputs (see :func:`decode_tiles`): on the CPU in flat rows (:func:`_owned_rows`), on
    devices in one packed copy, tile by tile (:func:`nuclei_per_tile`, the reference of the flat path)."""
    if dense.centre.device.type in DEVICE_DECODE:
        per_tile = device_decoder()(dense.centre, dense.fmap, engine.classify, input_hw, stride, cfg, features)
        return nuclei_per_tile(per_tile, tiles, tile_ids, merge, features)
    flat = decode_flat(dense.centre, dense.fmap, engine.classify, input_hw, stride, cfg)
    return _owned_rows(flat, tiles, tile_ids, merge, features)


def _owned_rows(flat: FlatNuclei, tiles: list[Tile], tile_ids: list[int], merge: MergeConfig, features: bool) -> Nuclei:
    """A batch's flat rows moved to image coordinates, kept where their tile owns them (its core plus the merge
    margin): what :func:`nuclei_per_tile` keeps, in the same order, without a loop over tiles."""
    counts = flat.counts.cpu().numpy().astype(np.int64)
    tile_of = np.repeat(np.arange(len(counts)), counts)  # each row's position in ``tiles``
    origins = np.array([(t.x, t.y) for t in tiles], np.float64).reshape(-1, 2)
    xy = _numpy(flat.xy).astype(np.float64) + origins[tile_of]
    keep = in_own_core(tiles, tile_of, xy, merge.margin)
    if not keep.any():
        return Nuclei.empty()  # as Nuclei.concat of no rows: no feature array either
    return Nuclei(
        xy[keep],
        _numpy(flat.score)[keep],
        _numpy(flat.class_id)[keep],
        _numpy(flat.class_prob)[keep],
        np.asarray(tile_ids, np.int64).reshape(-1)[tile_of][keep],
        _numpy(flat.feat, float32=True)[keep] if features else None,
    )


def nuclei_per_tile(
    per_tile: list, tiles: list[Tile], tile_ids: list[int], merge: MergeConfig, features: bool
) -> Nuclei:
    """Each tile's decoded nuclei (:class:`~muse_fast.post.decode.TileNuclei` or the device path's arrays) moved to
    image coordinates and kept where the tile owns them, one tile at a time."""
    kept = []
    for tile, tile_id, nuc in zip(tiles, tile_ids, per_tile):
        xy = _numpy(nuc.xy).astype(np.float64) + (tile.x, tile.y)
        keep = tile.owns(xy, merge.margin)
        kept.append(
            Nuclei(
                xy[keep],
                _numpy(nuc.score)[keep],
                _numpy(nuc.class_id)[keep],
                _numpy(nuc.class_prob)[keep],
                np.full(int(keep.sum()), tile_id, np.int64),
                _numpy(nuc.feat, float32=True)[keep] if features else None,
            )
        )
    return Nuclei.concat(kept)


def _numpy(a: np.ndarray | torch.Tensor, float32: bool = False) -> np.ndarray:
    """``a`` as numpy; with ``float32`` as the classifier takes it (engines may hand over fp16 or bf16 features)."""
    if isinstance(a, np.ndarray):
        return a.astype(np.float32, copy=False) if float32 else a
    return (a.float() if float32 else a).cpu().numpy()


# Device types whose outputs are decoded on the device in one packed copy (tests add "cpu" to run that path here).
DEVICE_DECODE = {"cuda"}
_local = threading.local()


def device_decoder() -> PackedDecoder:
    """This thread's decoder (its pinned host buffer must not be shared between threads)."""
    if not hasattr(_local, "decoder"):
        _local.decoder = PackedDecoder()
    return _local.decoder


def merge_in_memory(nuclei: Nuclei, tiles: list[Tile], merge: MergeConfig = MergeConfig()) -> Nuclei:
    """Resolve the overlap duplicates of nuclei that are all in memory (see :mod:`muse_fast.post.merge`)."""
    halo = np.flatnonzero(in_halo(tiles, nuclei.tile, nuclei.xy, merge))
    drop = np.zeros(len(nuclei), bool)
    drop[halo] = duplicates(tiles, nuclei.tile[halo], nuclei.xy[halo], nuclei.score[halo], merge)
    return nuclei.select(~drop)


def predict_image(
    engine: Engine,
    image: np.ndarray,
    tile_size: int,
    overlap: int,
    cfg: DecodeConfig,
    batch_size: int = 16,
    stride: int = 4,
    features: bool = False,
) -> Nuclei:
    """Nuclei of an RGB ``uint8 [H, W, 3]`` image already at the model's mpp (coordinates in its pixels); with
    ``features``, ``Nuclei.feat`` holds their point features (float32, the classifier's input); anything else is an
    :class:`InputError` (16-bit or float pixels would wrap or vanish in the network's uint8 input)."""
    check_rgb8(image)
    h, w = image.shape[:2]
    tiles = tile_grid(w, h, tile_size, overlap)
    parts = []
    for i in range(0, len(tiles), batch_size):
        chunk = tiles[i : i + batch_size]
        batch = np.stack([crop_tile(image, t, tile_size) for t in chunk])
        ids = list(range(i, i + len(chunk)))
        parts.append(decode_tiles(engine, chunk, ids, batch, cfg, stride, features=features))
    return merge_in_memory(Nuclei.concat(parts), tiles)


def check_rgb8(image) -> None:
    """An :class:`InputError` naming what ``image`` is unless it is a ``uint8 [H, W, 3]`` numpy array."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"the image must be a numpy array (uint8, [H, W, 3]), got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputError(
            f"the image must be RGB uint8 [H, W, 3], got {image.dtype} {list(image.shape)}; convert it first "
            f"(PIL: .convert('RGB'); 16-bit: (x >> 8).astype(np.uint8); floats in 0..1: (x * 255).round())"
        )
