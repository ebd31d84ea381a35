"""Slide -> nuclei -> files.

    tissue mask -> tile grid at the model's mpp -> batched reads (a reader thread, bounded prefetch)
    -> engine -> peaks + point classes -> ownership filter (each tile keeps its core) -> shard per batch
    -> streaming writers (GeoJSON, CSV, Parquet) + overlay

Tile cores partition the slide, so merging overlapping tiles needs no state: every nucleus is final when its tile
is done, and nothing grows with slide size except the shard files on disk. Shards make runs resumable.
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..config import InferConfig
from ..errors import InputError
from ..io.readers import SlideReader, open_slide
from ..io.resample import read_tiles
from ..io.tiling import Tile, tile_grid
from ..io.tissue import TissueMask, detect_tissue
from ..model.weights import WeightsMeta
from ..output.atomic import atomic_write
from ..output.overlay import Overlay
from ..output.writers import NucleiWriters
from ..post.merge import MergeConfig, duplicates, in_halo
from .engines import Engine
from .predict import Nuclei, decode_tiles, merge_in_memory
from .shards import ShardStore

BLANK_CHROMA = 18  # max-min over RGB above which a pixel counts as stained
BLANK_FRACTION = 0.005  # a tile with fewer stained pixels than this is skipped as glass
PREFETCH_BATCHES = 2  # batches read ahead of the engine (bounds memory)


@dataclass
class SlideSummary:
    slide: str
    status: str  # "done", "skipped" (outputs exist), "failed"
    nuclei: int = 0
    per_class: dict[str, int] = field(default_factory=dict)
    tiles: int = 0
    tiles_blank: int = 0
    seconds: float = 0.0
    area_mm2: float = 0.0
    seconds_per_mm2: float = 0.0
    resumed_batches: int = 0
    outputs: list[str] = field(default_factory=list)
    error: str = ""

    def line(self) -> str:
        name = Path(self.slide).name
        if self.status != "done":
            return f"{name}: {self.status}{': ' + self.error if self.error else ''}"
        counts = ", ".join(f"{k} {v}" for k, v in self.per_class.items())
        resumed = f", {self.resumed_batches} batches resumed" if self.resumed_batches else ""
        return (
            f"{name}: {self.nuclei} nuclei ({counts}); {self.tiles} tiles (+{self.tiles_blank} blank){resumed}; "
            f"{self.seconds:.1f} s, {self.seconds_per_mm2:.2f} s/mm^2"
        )


def is_blank(tile: np.ndarray) -> bool:
    chroma = tile.max(axis=-1).astype(np.int16) - tile.min(axis=-1)
    return float((chroma > BLANK_CHROMA).mean()) < BLANK_FRACTION


def slide_scale(slide: SlideReader, model_mpp: float) -> float:
    """Level-0 pixels per model pixel; a slide without mpp is an error that names the fix."""
    if slide.mpp is None:
        raise InputError(
            f"{slide.path.name} does not record its resolution (mpp); pass --mpp X (microns per pixel, "
            f"e.g. 0.25 at 40x, 0.5 at 20x)"
        )
    return model_mpp / slide.mpp


def plan_tiles(slide: SlideReader, meta: WeightsMeta, overlap: int, mask: TissueMask | None) -> list[Tile]:
    """The tile grid at the model's mpp, restricted to tiles that touch tissue when a mask is given."""
    scale = slide_scale(slide, meta.mpp)
    w0, h0 = slide.level_dimensions[0]
    size = meta.tile_size
    tiles = tile_grid(math.ceil(w0 / scale), math.ceil(h0 / scale), size, overlap)
    if mask is None:
        return tiles
    return [t for t in tiles if mask.fraction_in(t.x * scale, t.y * scale, (t.x + size) * scale, (t.y + size) * scale)]


def iter_batches(
    slide: SlideReader,
    engine: Engine,
    meta: WeightsMeta,
    cfg: InferConfig,
    tiles: list[Tile],
    todo: set[int] | None = None,
) -> Iterator[tuple[int, Nuclei, int]]:
    """Yield ``(batch index, nuclei in model pixels, blank tiles)`` for each batch in ``todo`` (default: all).

    Nuclei still include the overlap duplicates (see :mod:`muse_fast.post.merge`).

    Reads run in a background thread (batched per backend, ``cfg.workers`` threads) at most ``PREFETCH_BATCHES``
    ahead of the engine, so reading, inference and decoding overlap with bounded memory.
    """
    scale = slide_scale(slide, meta.mpp)
    size = meta.tile_size
    batches = [tiles[i : i + cfg.batch_size] for i in range(0, len(tiles), cfg.batch_size)]
    order = [i for i in range(len(batches)) if todo is None or i in todo]
    with ThreadPoolExecutor(max(1, cfg.workers)) as pool, ThreadPoolExecutor(1) as reader:

        def submit(index: int):
            origins = [(round(t.x * scale), round(t.y * scale)) for t in batches[index]]
            return index, reader.submit(read_tiles, slide, origins, size, scale, pool)

        pending = deque(submit(i) for i in order[:PREFETCH_BATCHES])
        queue = order[PREFETCH_BATCHES:]
        while pending:
            index, future = pending.popleft()
            if queue:
                pending.append(submit(queue.pop(0)))
            images = future.result()
            batch = batches[index]
            keep = [i for i, im in enumerate(images) if not (cfg.skip_background and is_blank(im))]
            nuc = Nuclei.empty()
            if keep:
                ids = [index * cfg.batch_size + i for i in keep]
                tiles_kept, pixels = [batch[i] for i in keep], np.stack([images[i] for i in keep])
                nuc = decode_tiles(engine, tiles_kept, ids, pixels, cfg.decode)
            yield index, nuc, len(batch) - len(keep)


def predict_slide(
    slide: SlideReader, engine: Engine, meta: WeightsMeta, cfg: InferConfig, tiles: list[Tile] | None = None
) -> tuple[Nuclei, int, int]:
    """All nuclei of a slide in memory, level-0 pixels (small slides, benchmarks); (nuclei, tiles run, tiles blank)."""
    tiles = plan_tiles(slide, meta, cfg.overlap, None) if tiles is None else tiles
    parts, blank = [], 0
    for _, nuc, skipped in iter_batches(slide, engine, meta, cfg, tiles):
        parts.append(nuc)
        blank += skipped
    nuclei = merge_in_memory(Nuclei.concat(parts), tiles)
    nuclei.xy = nuclei.xy * slide_scale(slide, meta.mpp)
    return nuclei, len(tiles) - blank, blank


def output_stem(path: Path) -> str:
    """File name without its image suffix (``.ome.tif`` counts as one suffix)."""
    name = Path(path).name
    for suffix in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def final_outputs(out_dir: Path, stem: str) -> list[Path]:
    return [out_dir / f"{stem}.geojson", out_dir / f"{stem}.csv"]


def run_slide(
    path: Path, engine: Engine, meta: WeightsMeta, cfg: InferConfig, fingerprint: dict, mpp: float | None = None
) -> SlideSummary:
    """Predict one slide into ``cfg.out_dir``: GeoJSON, CSV (+ Parquet), overlay and tissue PNGs.

    Finished slides (final outputs present) are skipped unless ``cfg.overwrite``. Batches already checkpointed by an
    interrupted run with the same ``fingerprint`` are not recomputed, and the outputs are byte-identical to an
    uninterrupted run.
    """
    from tqdm import tqdm

    start = time.time()
    stem = output_stem(path)
    if not cfg.overwrite and all(p.exists() for p in final_outputs(cfg.out_dir, stem)):
        return SlideSummary(str(path), "skipped", outputs=[str(p) for p in final_outputs(cfg.out_dir, stem)])
    slide = open_slide(path, cfg.reader, mpp if mpp is not None else cfg.mpp)
    try:
        slide_scale(slide, meta.mpp)  # fail early on a missing mpp
        mask = detect_tissue(slide, slide.mpp) if cfg.tissue_mask and slide.backend != "image" else None
        tiles = plan_tiles(slide, meta, cfg.overlap, mask)
        if not tiles:
            raise InputError(
                f"no tissue found in {Path(path).name}; check the slide, or pass --no-tissue-mask to process every tile"
            )
        cfg.out_dir.mkdir(parents=True, exist_ok=True)
        store = ShardStore(cfg.out_dir, stem, {**fingerprint, "slide_mpp": slide.mpp, "tiles": len(tiles)})
        n_batches = math.ceil(len(tiles) / cfg.batch_size)
        todo = {i for i in range(n_batches) if not store.has(i)}
        with tqdm(total=len(tiles), desc=Path(path).name, unit="tile", disable=cfg.quiet, leave=False) as bar:
            bar.update(
                sum(
                    len(tiles[i * cfg.batch_size : (i + 1) * cfg.batch_size]) for i in range(n_batches) if i not in todo
                )
            )
            found = 0
            for index, nuc, blank in iter_batches(slide, engine, meta, cfg, tiles, todo):
                store.write(index, nuc, blank)
                found += len(nuc)
                bar.update(len(tiles[index * cfg.batch_size : (index + 1) * cfg.batch_size]))
                bar.set_postfix(nuclei=found, refresh=False)
        summary = _write_outputs(slide, store, tiles, n_batches, meta, cfg, stem, mask)
    finally:
        slide.close()
    store.remove()
    summary.slide, summary.tiles = str(path), len(tiles) - summary.tiles_blank
    summary.resumed_batches = n_batches - len(todo)
    summary.seconds = time.time() - start
    summary.seconds_per_mm2 = summary.seconds / max(summary.area_mm2, 1e-9)
    return summary


def _overlap_duplicates(store: ShardStore, tiles: list[Tile], n_batches: int) -> dict[int, np.ndarray]:
    """Pass 1 over the shards: resolve duplicates among the halo-strip nuclei only; per batch, rows to drop."""
    merge = MergeConfig()
    refs, xy, tile_ids, scores = [], [], [], []
    for index in range(n_batches):
        nuc, _ = store.read(index)
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


def _write_outputs(
    slide: SlideReader,
    store: ShardStore,
    tiles: list[Tile],
    n_batches: int,
    meta: WeightsMeta,
    cfg: InferConfig,
    stem: str,
    mask: TissueMask | None,
) -> SlideSummary:
    """Pass 2: stream the shards in batch order, without overlap duplicates, into the writers and the overlay."""
    counts = np.zeros(len(meta.classes), np.int64)
    blank = 0
    scale = slide_scale(slide, meta.mpp)
    drop = _overlap_duplicates(store, tiles, n_batches)
    overlay = Overlay(slide, meta.classes)
    with NucleiWriters(cfg.out_dir, stem, meta.classes) as writers:
        for index in range(n_batches):
            nuc, skipped = store.read(index)
            keep = np.ones(len(nuc), bool)
            keep[drop[index]] = False
            nuc = nuc.select(keep)
            nuc.xy = nuc.xy * scale  # model pixels -> level-0 pixels
            writers.write(nuc)
            overlay.add(nuc)
            counts += np.bincount(nuc.class_id, minlength=len(meta.classes))[: len(meta.classes)]
            blank += skipped
    outputs = [str(p) for p in writers.paths]
    images = [(cfg.out_dir / f"{stem}.overlay.png", overlay.image)]
    if mask is not None:
        images.append((cfg.out_dir / f"{stem}.tissue.png", mask.to_png()))
    for target, image in images:
        with atomic_write(target, "wb") as fh:
            image.save(fh, format="PNG")
        outputs.append(str(target))
    w0, h0 = slide.level_dimensions[0]
    area = w0 * h0 * slide.mpp**2 / 1e6 * (float(mask.mask.mean()) if mask is not None else 1.0)
    return SlideSummary(
        "",
        "done",
        int(counts.sum()),
        {c: int(n) for c, n in zip(meta.classes, counts)},
        tiles_blank=blank,
        area_mm2=area,
        outputs=outputs,
    )


def write_run_summary(out_dir: Path, summaries: list[SlideSummary], config: dict) -> Path:
    path = Path(out_dir) / "run_summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    failed = [s for s in summaries if s.status == "failed"]
    payload = {"slides": [asdict(s) for s in summaries], "failed": len(failed), "config": config}
    with atomic_write(path) as fh:
        json.dump(payload, fh, indent=2, default=str)
    return path
