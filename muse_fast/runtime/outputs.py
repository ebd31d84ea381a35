"""Pass 2 of a slide run: checkpoint shards -> nuclei without overlap duplicates -> every output file of the slide.

Each file is written under a temporary name staged in a :class:`~muse_fast.output.atomic.StagedFiles`; the caller
renames them all once every one is complete (and removes them if anything fails first).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image

from ..io.readers import SlideReader
from ..io.tiling import Tile
from ..io.tissue import TissueMask
from ..output.atomic import StagedFiles
from ..output.density import DensityGrid
from ..output.overlay import Overlay
from ..output.writers import NucleiWriters
from ..post.merge import MergeConfig, duplicates, in_halo
from .executors import cancel_on_error
from .shards import ShardStore


@dataclass
class WrittenOutputs:
    per_class: dict[str, int]
    tiles_blank: int
    files: list[Path]  # final names, in the order they are staged (and renamed)


def overlap_duplicates(store: ShardStore, tiles: list[Tile], n_batches: int) -> dict[int, np.ndarray]:
    """Pass 1 over the shards: resolve duplicates among the halo-strip nuclei only; per batch, rows to drop."""
    merge = MergeConfig()
    batch, rows, xy, tile_ids, scores = [], [], [], [], []
    for index in range(n_batches):
        nuc, _ = store.read(index, features=False)
        halo = np.flatnonzero(in_halo(tiles, nuc.tile, nuc.xy, merge))
        batch.append(np.full(len(halo), index, np.int64))
        rows.append(halo)
        xy.append(nuc.xy[halo])
        tile_ids.append(nuc.tile[halo])
        scores.append(nuc.score[halo])
    drop = {i: np.zeros(0, np.int64) for i in range(n_batches)}
    if any(len(r) for r in rows):
        dup = duplicates(tiles, np.concatenate(tile_ids), np.concatenate(xy), np.concatenate(scores), merge)
        batch, rows = np.concatenate(batch)[dup], np.concatenate(rows)[dup].astype(np.int64)
        starts = np.flatnonzero(np.diff(batch)) + 1  # batch is in order: one run of rows per batch
        if len(batch):
            for index, part in zip(batch[np.r_[0, starts]].tolist(), np.split(rows, starts)):
                drop[index] = part
    return drop


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
    names = ("overlay", "tissue", "density") if mask is not None else ("overlay", "density")
    pngs = {name: out_dir / f"{stem}.{name}.png" for name in names}
    with (
        ThreadPoolExecutor(1, thread_name_prefix="muse-images") as beside,  # reads and PNG encodes release the GIL
        cancel_on_error(beside),
    ):
        overlay_job = beside.submit(Overlay, slide, classes)  # its thumbnail is read while the duplicates are resolved
        drop = overlap_duplicates(store, tiles, n_batches)
        density = DensityGrid.empty(*slide.level_dimensions[0], len(classes), slide.mpp)
        if mask is not None:
            density.restrict_to(mask)
        jobs = []  # the tissue and overlay PNGs, drawn and encoded beside the tables
        with NucleiWriters(out_dir, stem, classes, staged, regions, embeddings) as writers:
            staged_png = {name: staged.add(path) for name, path in pngs.items()}  # staged after the tables
            if mask is not None:
                jobs.append(_png_beside(beside, staged_png["tissue"], mask.to_png))
            overlay = overlay_job.result()
            overlay.mark_unreadable(regions)
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
            jobs.append(_png_beside(beside, staged_png["overlay"], lambda: overlay.image))  # as the tables close
        _write_png(StagedFiles.open_added(staged_png["density"]), lambda: density.image(classes))
        for job in jobs:
            job.result()
    files = list(writers.paths) + list(pngs.values())
    return WrittenOutputs({c: int(n) for c, n in zip(classes, counts)}, blank, files)


def _png_beside(beside: ThreadPoolExecutor, path: Path, draw: Callable[[], Image.Image]) -> Future:
    """Draw and encode a PNG on the thread beside, into its staged temporary file created here, on the run's thread:
    if a second interrupt ends the run before the job is done, the staged files' removal still finds the file (the
    job then writes into a file no longer in the folder)."""
    fh = StagedFiles.open_added(path)
    try:
        job = beside.submit(_write_png, fh, draw)
    except BaseException:
        fh.close()
        raise
    job.add_done_callback(lambda done: fh.close() if done.cancelled() else None)  # dropped before it ran
    return job


def _write_png(fh: IO, draw: Callable[[], Image.Image]) -> None:
    """The image ``draw`` makes, as a PNG into ``fh`` (a staged temporary file), which is closed after."""
    with fh:  # zlib.Z_RLE: level 6 size, 2.5x faster on tissue
        draw().save(fh, format="PNG", compress_type=3, pnginfo=_signed())


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
