"""Slide -> nuclei -> files.

    tissue mask -> tile grid at the model's mpp -> batched reads (a reader thread, bounded prefetch)
    -> engine -> peaks + point classes -> ownership filter (each tile keeps its core) -> shard per batch
    -> streaming writers (GeoJSON, CSV, Parquet; with embeddings the point features, .h5ad) + overlay

Tile cores partition the slide, so merging overlapping tiles needs no state: every nucleus is final when its tile
is done, and nothing grows with slide size except the shard files on disk. Shards make runs resumable.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from ..config import MIN_MPP, PLAUSIBLE_MPP, InferConfig, check_mpp, check_weights_mpp, valid_mpp
from ..errors import InputError
from ..io.blocks import block_cache
from ..io.checked_read import read_tiles_checked
from ..io.native_output import capture_native_output
from ..io.readers import SlideReader, open_slide
from ..io.tiling import Tile, tile_grid
from ..io.tissue import TissueMask, detect_tissue
from ..model.weights import WeightsMeta
from ..output.atomic import StagedFiles, remove_quietly, remove_stale_partials
from ..output.density import class_densities
from ..output.folder import output_errors, prepare_out_dir
from ..output.h5ad import embeddings_uns
from ..output.text import printable
from ..post.classes import class_colours
from .bounds import check_name_length, check_tile_plan, grid_size, max_tiles
from .engines import Engine
from .executors import cancel_on_error
from .fingerprint import precision_fingerprint, slide_fingerprint
from .lock import SlideLock
from .manifest import Manifest, finished_manifest, manifest_path, measure_outputs, write_manifest
from .outputs import write_outputs
from .ownership import check_slide_paths, claim_outputs, output_names, planned_outputs
from .predict import Nuclei, decode_tiles, merge_in_memory, nuclei_from_dense
from .seams import seam
from .shards import ShardStore, shard_dir
from .summary import SlideSummary
from .unreadable import unreadable_error, unreadable_regions

BLANK_CHROMA = 18  # max-min over RGB above which a pixel counts as stained
BLANK_FRACTION = 0.005  # a tile with fewer stained pixels than this is skipped as glass
BLANK_PROBE_ROWS = 24  # rows counted first: enough stained pixels there and the tile is tissue
PREFETCH_BATCHES = 2  # batches read ahead of the engine (bounds memory)
log = logging.getLogger(__name__)


def stained_count(tile: np.ndarray) -> int:
    """Pixels whose max-min over RGB exceeds :data:`BLANK_CHROMA`."""
    r, g, b = tile[..., 0], tile[..., 1], tile[..., 2]  # per channel: ~20x faster than reducing a length-3 axis
    chroma = np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)  # max >= min: uint8 cannot wrap
    return int(np.count_nonzero(chroma > BLANK_CHROMA))


def is_blank_reference(tile: np.ndarray) -> bool:
    """Fewer than :data:`BLANK_FRACTION` of the tile's pixels stained: glass."""
    return stained_count(tile) / (tile.shape[0] * tile.shape[1]) < BLANK_FRACTION


def is_blank(tile: np.ndarray) -> bool:
    """:func:`is_blank_reference`, answered from the first rows when they already hold enough stained pixels (the
    count only grows with more rows), which on tissue is nearly always: about a tenth of the work."""
    pixels = tile.shape[0] * tile.shape[1]
    if stained_count(tile[:BLANK_PROBE_ROWS]) / pixels >= BLANK_FRACTION:
        return False
    return is_blank_reference(tile)


def slide_scale(slide: SlideReader, model_mpp: float) -> float:
    """Level-0 pixels per model pixel; a slide without mpp is an error that names the fix."""
    check_weights_mpp(model_mpp, "in use")
    if slide.mpp is None or not valid_mpp(slide.mpp) or slide.mpp < MIN_MPP:
        found = "does not record its resolution" if slide.mpp is None else f"records a resolution of {slide.mpp}"
        raise InputError(
            f"{slide.path.name} {found} (mpp); pass --mpp X (microns per pixel: 0.25 at 40x, 0.5 at 20x, 1.0 at 10x; "
            f"to estimate it, measure a few lymphocyte nuclei, about 7 um across: ~28 px at 0.25, ~14 px at 0.5, "
            f"~7 px at 1.0)"
        )
    return model_mpp / slide.mpp


def _warn_if_implausible(slide: SlideReader, meta: WeightsMeta, overlap: int) -> None:
    """A resolution (the slide's or the model's) outside :data:`PLAUSIBLE_MPP` is usually a wrong ``--mpp``, tag or
    weights file: say what it costs."""
    usual = [PLAUSIBLE_MPP[0] <= mpp <= PLAUSIBLE_MPP[1] for mpp in (slide.mpp, meta.mpp)]
    if all(usual):
        return
    tiles = full_grid_size(slide, meta, overlap)
    if tiles > max_tiles():
        return  # plan_tiles refuses it, with the number
    who = f"{slide.mpp:g} um/px" if not usual[0] else f"the model's {meta.mpp:g} um/px (its weights)"
    log.warning(
        "%s: %s is outside the usual %g-%g um/px; at the model's %g um/px that plans up to %s tiles; check "
        "--mpp, the file's resolution or the weights",
        slide.path.name,
        who,
        *PLAUSIBLE_MPP,
        meta.mpp,
        f"{tiles:,}",
    )


def full_grid_size(slide: SlideReader, meta: WeightsMeta, overlap: int) -> int:
    """Tiles of the whole slide at the model's mpp (before the tissue mask), counted without making them."""
    scale = slide_scale(slide, meta.mpp)
    w, h = (math.ceil(n / scale) for n in slide.level_dimensions[0])  # as plan_tiles sizes the grid
    return grid_size(w, h, meta.tile_size, overlap)


def plan_tiles(slide: SlideReader, meta: WeightsMeta, overlap: int, mask: TissueMask | None) -> list[Tile]:
    """The tile grid at the model's mpp, restricted to tiles that touch tissue when a mask is given."""
    scale = slide_scale(slide, meta.mpp)
    check_tile_plan(full_grid_size(slide, meta, overlap), slide.path.name, slide.mpp, meta.mpp)
    w0, h0 = slide.level_dimensions[0]
    size = meta.tile_size
    tiles = tile_grid(math.ceil(w0 / scale), math.ceil(h0 / scale), size, overlap)
    if mask is None:
        return tiles
    return [t for t in tiles if mask.fraction_in(t.x * scale, t.y * scale, (t.x + size) * scale, (t.y + size) * scale)]


@dataclass
class BatchResult:
    index: int
    nuclei: Nuclei  # model pixels; overlap duplicates still included (see :mod:`muse_fast.post.merge`)
    blank: int  # tiles skipped as glass
    unreadable: dict[int, str]  # tile id -> why its image data could not be decoded (those tiles are not run)


def iter_batches(
    slide: SlideReader,
    engine: Engine,
    meta: WeightsMeta,
    cfg: InferConfig,
    tiles: list[Tile],
    todo: set[int] | None = None,
) -> Iterator[BatchResult]:
    """One :class:`BatchResult` per batch in ``todo`` (default: all), in order.

    Reads run in a background thread (batched per backend, ``cfg.workers`` threads) at most ``PREFETCH_BATCHES``
    ahead of the engine, so reading, inference and decoding overlap with bounded memory. Tiles whose data cannot be
    decoded (:mod:`muse_fast.io.checked_read`) never reach the network.
    """
    scale = slide_scale(slide, meta.mpp)
    size = meta.tile_size
    batches = [tiles[i : i + cfg.batch_size] for i in range(0, len(tiles), cfg.batch_size)]
    order = [i for i in range(len(batches)) if todo is None or i in todo]
    overlap = engine.device.type in OVERLAP_DEVICES
    cache = block_cache(slide)
    with (
        capture_native_output(),
        ThreadPoolExecutor(max(1, cfg.workers)) as pool,
        ThreadPoolExecutor(1) as reader,
        ThreadPoolExecutor(1) as decoder,
        cancel_on_error(pool, reader, decoder),
    ):

        def submit(index: int):
            origins = [(round(t.x * scale), round(t.y * scale)) for t in batches[index]]
            return index, reader.submit(read_tiles_checked, slide, origins, size, scale, pool, cache)

        pending = deque(submit(i) for i in order[:PREFETCH_BATCHES])
        queue = order[PREFETCH_BATCHES:]
        decoding: deque[tuple[BatchResult, Future | None]] = deque()  # at most one batch decoding behind the engine
        while pending:
            index, future = pending.popleft()
            if queue:
                pending.append(submit(queue.pop(0)))
            images, bad = future.result()
            batch = batches[index]
            keep = [i for i, im in enumerate(images) if i not in bad and not (cfg.skip_background and is_blank(im))]
            unreadable = {index * cfg.batch_size + i: reason for i, reason in bad.items()}
            result, job = BatchResult(index, Nuclei.empty(), len(batch) - len(keep) - len(bad), unreadable), None
            if keep:
                ids = [index * cfg.batch_size + i for i in keep]
                tiles_kept, pixels = [batch[i] for i in keep], np.stack([images[i] for i in keep])
                if overlap:  # the engine's next batch is queued on the device while this one decodes
                    try:
                        dense = engine.run(pixels)
                    except Exception:
                        while decoding:  # the batch decoding meanwhile is finished and kept before the error
                            yield _finished(*decoding.popleft())
                        raise
                    args = (engine, dense, tiles_kept, ids, pixels.shape[1:3], cfg.decode)
                    decode = partial(nuclei_from_dense, features=cfg.embeddings)
                    job = decoder.submit(_on_device, engine, decode, *args)
                else:
                    result.nuclei = decode_tiles(engine, tiles_kept, ids, pixels, cfg.decode, features=cfg.embeddings)
            decoding.append((result, job))
            while len(decoding) > (1 if overlap else 0):
                yield _finished(*decoding.popleft())
        while decoding:
            yield _finished(*decoding.popleft())


# Engines on these devices overlap: the main thread queues batch i + 1 while a worker thread decodes batch i. Not the
# CPU: its engines keep every core busy, so a decode beside the network takes a core from it and the network's other
# threads wait at their barriers; decoded on the main thread, between batches, it shares the CPU only with the reads of
# the next batch. Quiet, 2-core AMX Xeon, BRCA-M2C mosaic, compiled bf16, alternating in one process: 6.18-6.42 s
# serial against 6.83-7.29 s overlapped (docs/results.md).
OVERLAP_DEVICES = {"cuda"}


def _on_device(engine: Engine, fn, *args):
    """Run ``fn`` in a worker thread with the engine's CUDA device current (Triton launches on the current one)."""
    if engine.device.type != "cuda":
        return fn(*args)
    import torch

    with torch.cuda.device(engine.device):
        return fn(*args)


def _finished(result: BatchResult, job: Future | None) -> BatchResult:
    if job is not None:
        result.nuclei = job.result()
    return result


def predict_slide(
    slide: SlideReader, engine: Engine, meta: WeightsMeta, cfg: InferConfig, tiles: list[Tile] | None = None
) -> tuple[Nuclei, int, int]:
    """All nuclei of a slide in memory, level-0 pixels (small slides, benchmarks); (nuclei, tiles run, tiles blank).

    Tiles whose data cannot be decoded are an :class:`InputError` (see :func:`unreadable_error`).
    """
    tiles = plan_tiles(slide, meta, cfg.overlap, None) if tiles is None else tiles
    parts, blank, unreadable = [], 0, {}
    for result in iter_batches(slide, engine, meta, cfg, tiles):
        parts.append(result.nuclei)
        blank += result.blank
        unreadable.update(result.unreadable)
    scale = slide_scale(slide, meta.mpp)
    if unreadable:
        raise unreadable_error(slide.path.name, unreadable, tiles, scale, meta.tile_size)
    nuclei = merge_in_memory(Nuclei.concat(parts), tiles)
    nuclei.xy = nuclei.xy * scale
    return nuclei, len(tiles) - blank, blank


def output_stem(path: Path) -> str:
    """File name without its image suffix (``.ome.tif`` counts as one suffix)."""
    name = Path(path).name
    for suffix in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def run_slide(
    path: Path, engine: Engine, meta: WeightsMeta, cfg: InferConfig, fingerprint: dict, mpp: float | None = None
) -> SlideSummary:
    """Predict one slide into ``cfg.out_dir``: GeoJSON, CSV (+ Parquet, + .h5ad with ``cfg.embeddings``), overlay and
    tissue PNGs, then the manifest.

    The run holds the slide's lock (``OUT/.<stem>.lock``; a second run gets an :class:`OutputError`). A slide whose
    manifest matches this run's fingerprint (the file's identity, the settings, and ``fingerprint``: weights, engine)
    and lists only existing files is skipped unless ``cfg.overwrite``; finished results of another fingerprint are an
    :class:`OutputError`. Batches checkpointed by an interrupted run with the same fingerprint are not recomputed, and
    the outputs are byte-identical to an uninterrupted run. Errors of the output folder are one-line OutputErrors.
    """
    start = time.time()
    path, stem = Path(path), output_stem(path)
    check_name_length(stem, path, cfg.out_dir)
    mpp = check_mpp(mpp if mpp is not None else cfg.mpp, f"the mpp of {path.name}")
    out_dir = prepare_out_dir(cfg.out_dir)
    seam("start")
    with output_errors(out_dir), SlideLock(out_dir, stem) as lock:
        seam("lock")
        check_slide_paths(out_dir, stem)  # links, FIFOs, devices, folders at our names: refused before any work
        if lock.stale or shard_dir(out_dir, stem).exists():  # a run was killed or stopped: clear what it left
            remove_stale_partials(out_dir, output_names(stem))
        fingerprint = {**fingerprint, **precision_fingerprint(engine)}  # never mix precisions on resume
        finger = slide_fingerprint(path, cfg, meta, mpp, fingerprint) if path.is_file() else None
        done = None if cfg.overwrite or finger is None else finished_manifest(out_dir, stem, finger, path.name)
        if done is not None:
            ShardStore.discard(out_dir, stem)  # left when a run was stopped just before removing it
            return SlideSummary(
                str(path),
                "skipped",
                nuclei=done.nuclei,
                per_class=done.per_class,
                tiles=done.tiles,
                tiles_blank=done.tiles_blank,
                area_mm2=done.area_mm2,
                outputs=[str(out_dir / name) for name in done.outputs],
                unreadable_regions=done.unreadable_regions,
            )
        with capture_native_output():  # decoders' complaints name damaged tiles (io/checked_read.py)
            summary = _predict_into(path, engine, meta, cfg, mpp, stem, finger)
    summary.seconds = time.time() - start
    summary.seconds_per_mm2 = summary.seconds / max(summary.area_mm2, 1e-9)
    return summary


def _predict_into(
    path: Path, engine: Engine, meta: WeightsMeta, cfg: InferConfig, mpp: float | None, stem: str, finger: dict | None
) -> SlideSummary:
    """Under the slide's lock: shards (resumed), staged outputs, renames, manifest, then removal of the shards."""
    from tqdm import tqdm

    out_dir = Path(cfg.out_dir)
    slide = open_slide(path, cfg.reader, mpp)
    try:
        finger = finger or slide_fingerprint(path, cfg, meta, mpp)
        scale = slide_scale(slide, meta.mpp)  # fail early on a missing mpp
        masked = cfg.tissue_mask and slide.backend != "image"
        owned = claim_outputs(out_dir, stem, planned_outputs(stem, cfg, masked), cfg.overwrite, path.name)
        _warn_if_implausible(slide, meta, cfg.overlap)
        mask = detect_tissue(slide, slide.mpp) if masked else None
        tiles = plan_tiles(slide, meta, cfg.overlap, mask)
        seam("plan")
        if not tiles:
            raise InputError(
                f"no tissue found in {Path(path).name}; check the slide, or pass --no-tissue-mask to process every tile"
            )
        shard_fingerprint = {**finger, "batch_size": cfg.batch_size, "slide_mpp": slide.mpp, "tiles": len(tiles)}
        store = ShardStore(out_dir, stem, shard_fingerprint)
        n_batches = math.ceil(len(tiles) / cfg.batch_size)
        todo = {i for i in range(n_batches) if not store.has(i)}
        shown = printable(path.name)  # a name's control characters never reach the terminal
        with tqdm(total=len(tiles), desc=shown, unit="tile", disable=cfg.quiet, leave=False) as bar:
            bar.update(
                sum(
                    len(tiles[i * cfg.batch_size : (i + 1) * cfg.batch_size]) for i in range(n_batches) if i not in todo
                )
            )
            found = 0  # before the overlap duplicates are removed, so above the final count (the summary line)
            for result in iter_batches(slide, engine, meta, cfg, tiles, todo):
                store.write(result.index, result.nuclei, result.blank, result.unreadable)
                seam(f"shard:{result.index}")
                found += len(result.nuclei)
                bar.set_postfix_str(f"{found:,} nuclei incl. tile-overlap duplicates", refresh=False)
                bar.update(len(tiles[result.index * cfg.batch_size : (result.index + 1) * cfg.batch_size]))
        blank, unreadable = store.tally(n_batches)
        if unreadable and not cfg.skip_unreadable:
            raise unreadable_error(path.name, unreadable, tiles, scale, meta.tile_size)
        if blank == len(tiles):
            store.remove()  # nothing in them is worth resuming
            raise InputError(
                f"no tissue found in {path.name}: every tile is blank (no stained pixels); check the image, or that "
                f"it is an H&E slide"
            )
        regions = unreadable_regions(unreadable, tiles, scale, meta.tile_size)
        with StagedFiles() as staged:
            uns = embeddings_uns(meta, slide.mpp, finger, path.name) if cfg.embeddings else None
            written = write_outputs(
                slide, store, tiles, n_batches, meta.classes, scale, out_dir, stem, mask, staged, regions, uns
            )
            seam("staged")
            final = {f.name for f in written.files} | {manifest_path(out_dir, stem).name}
            store.record_outputs(owned | final)  # until the new manifest lists them, they stay known as ours
            if manifest_path(out_dir, stem).name in owned:
                manifest_path(out_dir, stem).unlink(missing_ok=True)  # an old manifest no longer describes the folder
            for name in owned - final:
                remove_quietly(out_dir / name)  # nor do an older run's outputs that this one does not write (.h5ad)
            staged.commit(lambda final: seam("rename:" + final.name[len(stem) + 1 :]))
        w0, h0 = slide.level_dimensions[0]
        area = w0 * h0 * slide.mpp**2 / 1e6 * (float(mask.mask.mean()) if mask is not None else 1.0)
    finally:
        slide.close()
    nuclei, tiles_run = sum(written.per_class.values()), len(tiles) - written.tiles_blank - len(regions)
    seam("manifest")
    sizes, digests = measure_outputs(written.files)  # sizes, and digests of each file's ends
    record = Manifest(
        str(path),
        finger,
        sizes,
        nuclei,
        written.per_class,
        tiles_run,
        written.tiles_blank,
        area,
        regions,
        digests,
        class_densities(written.per_class, area),
        [list(c) for c in class_colours(meta.classes)],
    )
    write_manifest(out_dir, stem, record)
    seam("cleanup")
    store.remove()
    return SlideSummary(
        str(path),
        "done",
        nuclei=nuclei,
        per_class=written.per_class,
        tiles=tiles_run,
        tiles_blank=written.tiles_blank,
        area_mm2=area,
        resumed_batches=n_batches - len(todo),
        outputs=[str(f) for f in written.files],
        unreadable_regions=regions,
    )
