"""Pass 2 of a slide run: checkpoint shards -> nuclei without overlap duplicates -> every output file of the slide.

Each file is written under a temporary name staged in a :class:`~muse_fast.output.atomic.StagedFiles`; the caller
renames them all once every one is complete (and removes them if anything fails first).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io.readers import SlideReader
from ..io.tiling import Tile
from ..io.tissue import TissueMask
from ..output.atomic import StagedFiles
from ..output.density import DensityGrid
from ..output.overlay import Overlay
from ..output.writers import NucleiWriters
from ..post.merge import MergeConfig, duplicates, in_halo
from .shards import ShardStore


@dataclass
class WrittenOutputs:
    per_class: dict[str, int]
    tiles_blank: int
    files: list[Path]  # final names, in the order they are staged (and renamed)


def overlap_duplicates(store: ShardStore, tiles: list[Tile], n_batches: int) -> dict[int, np.ndarray]:
    """Pass 1 over the shards: resolve duplicates among the halo-strip nuclei only; per batch, rows to drop."""
    merge = MergeConfig()
    refs, xy, tile_ids, scores = [], [], [], []
    for index in range(n_batches):
        nuc, _ = store.read(index, features=False)
        halo = np.flatnonzero(in_halo(tiles, nuc.tile, nuc.xy, merge))
        refs += [(index, int(r)) for r in halo]
        xy.append(nuc.xy[halo])
        tile_ids.append(nuc.tile[halo])
        scores.append(nuc.score[halo])
    drop: dict[int, list[int]] = {i: [] for i in range(n_batches)}
    if refs:
        dup = duplicates(tiles, np.concatenate(tile_ids), np.concatenate(xy), np.concatenate(scores), merge)
        for (index, row), is_dup in zip(refs, dup):
            if is_dup:
                drop[index].append(row)
    return {i: np.asarray(rows, np.int64) for i, rows in drop.items()}


def write_outputs(
    slide: SlideReader,
    store: ShardStore,
    tiles: list[Tile],
    n_batches: int,
    classes: tuple[str, ...],
    scale: float,
    out_dir: Path,
    stem: str,
    mask: TissueMask | None,
    staged: StagedFiles,
    unreadable_regions: list[list[int]] | None = None,
    embeddings: dict | None = None,
) -> WrittenOutputs:
    """Pass 2: stream the shards in batch order, without overlap duplicates, into the writers and the overlay.

    ``scale`` is level-0 pixels per model pixel. Tables, ``<stem>.overlay.png``, ``<stem>.density.png`` (nuclei per
    mm^2 per class, :mod:`muse_fast.output.density`) and (with a mask) ``<stem>.tissue.png`` are complete under their
    temporary names when this returns. ``unreadable_regions``
    (level-0 ``[x, y, w, h]`` skipped as damaged) go into the GeoJSON's metadata and are marked on the overlay.
    With ``embeddings`` (its ``uns``), ``<stem>.h5ad`` gets the point features of the same rows, in the same order.
    """
    regions = unreadable_regions or []
    counts = np.zeros(len(classes), np.int64)
    blank = 0
    drop = overlap_duplicates(store, tiles, n_batches)
    overlay = Overlay(slide, classes)
    overlay.mark_unreadable(regions)
    density = DensityGrid.empty(*slide.level_dimensions[0], len(classes), slide.mpp)
    if mask is not None:
        density.restrict_to(mask)
    with NucleiWriters(out_dir, stem, classes, staged, regions, embeddings) as writers:
        for index in range(n_batches):
            nuc, skipped = store.read(index)
            keep = np.ones(len(nuc), bool)
            keep[drop[index]] = False
            nuc = nuc.select(keep)
            nuc.xy = nuc.xy * scale  # model pixels -> level-0 pixels
            writers.write(nuc)
            overlay.add(nuc)
            density.add(nuc.xy, nuc.class_id)
            counts += np.bincount(nuc.class_id, minlength=len(classes))[: len(classes)]
            blank += skipped
    files = list(writers.paths)
    images = [(out_dir / f"{stem}.overlay.png", overlay.image)]
    if mask is not None:
        images.append((out_dir / f"{stem}.tissue.png", mask.to_png()))
    images.append((out_dir / f"{stem}.density.png", density.image(classes)))
    for target, image in images:
        with staged.open(target, "wb") as fh:  # zlib.Z_RLE: level 6 size, 2.5x faster on tissue
            image.save(fh, format="PNG", compress_type=3, pnginfo=_signed())
        files.append(target)
    return WrittenOutputs({c: int(n) for c, n in zip(classes, counts)}, blank, files)


PNG_SOFTWARE = "muse-fast"  # the PNG images' Software text: how a later run knows them for its own outputs


def _signed():
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Software", PNG_SOFTWARE)
    return info


def png_is_ours(path: Path) -> bool:
    """Whether ``path`` is a PNG that muse-fast wrote (its Software text, read from the header only)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.format == "PNG" and image.info.get("Software") == PNG_SOFTWARE
    except Exception:  # noqa: BLE001 - anything unreadable is not ours
        return False
