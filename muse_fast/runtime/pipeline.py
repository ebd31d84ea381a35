"""Slide -> nuclei -> files: tissue mask, tiles at the model's mpp, batched reads ahead of the engine, decode, write."""

from __future__ import annotations

import math
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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
from ..output.geojson import write_geojson
from ..output.table import write_csv
from .engines import Engine
from .predict import Nuclei, decode_tiles

BLANK_CHROMA = 18  # max-min over RGB above which a pixel counts as stained
BLANK_FRACTION = 0.005  # a tile with fewer stained pixels than this is skipped as glass
PREFETCH_BATCHES = 2  # batches read ahead of the engine (bounds memory)


@dataclass
class SlideSummary:
    slide: str
    nuclei: int
    per_class: dict[str, int]
    tiles: int
    tiles_skipped: int
    seconds: float
    outputs: list[str]


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


def plan_tiles(slide: SlideReader, meta: WeightsMeta, cfg: InferConfig, mask: TissueMask | None) -> list[Tile]:
    """The tile grid at the model's mpp, restricted to tiles that touch tissue when a mask is given."""
    scale = slide_scale(slide, meta.mpp)
    w0, h0 = slide.level_dimensions[0]
    size = meta.tile_size
    tiles = tile_grid(math.ceil(w0 / scale), math.ceil(h0 / scale), size, cfg.overlap)
    if mask is None:
        return tiles
    return [t for t in tiles if mask.fraction_in(t.x * scale, t.y * scale, (t.x + size) * scale, (t.y + size) * scale)]


def predict_slide(
    slide: SlideReader,
    engine: Engine,
    meta: WeightsMeta,
    cfg: InferConfig,
    tiles: list[Tile] | None = None,
    progress=None,
) -> tuple[Nuclei, int, int]:
    """Nuclei of a slide in level-0 pixels; returns (nuclei, tiles run, tiles skipped as blank)."""
    scale = slide_scale(slide, meta.mpp)
    tiles = plan_tiles(slide, meta, cfg, None) if tiles is None else tiles
    size = meta.tile_size
    batches = [tiles[i : i + cfg.batch_size] for i in range(0, len(tiles), cfg.batch_size)]
    parts, skipped = [], 0
    with ThreadPoolExecutor(max(1, cfg.workers)) as pool, ThreadPoolExecutor(1) as reader:

        def submit(batch: list[Tile]):
            origins = [(round(t.x * scale), round(t.y * scale)) for t in batch]
            return batch, reader.submit(read_tiles, slide, origins, size, scale, pool)

        pending = deque(submit(b) for b in batches[:PREFETCH_BATCHES])
        for next_batch in batches[PREFETCH_BATCHES:] + [None] * PREFETCH_BATCHES:
            batch, future = pending.popleft()
            if next_batch is not None:
                pending.append(submit(next_batch))
            images = future.result()
            keep = [i for i, im in enumerate(images) if not (cfg.skip_background and is_blank(im))]
            skipped += len(images) - len(keep)
            if keep:
                nuc = decode_tiles(
                    engine, [batch[i] for i in keep], np.stack([images[i] for i in keep]), cfg.decode, stride=4
                )
                nuc.xy = nuc.xy * scale  # model pixels -> level-0 pixels
                parts.append(nuc)
            if progress is not None:
                progress.update(len(batch))
                progress.set_postfix(nuclei=sum(len(p) for p in parts), refresh=False)
            if not pending:
                break
    return Nuclei.concat(parts), len(tiles) - skipped, skipped


def output_stem(path: Path) -> str:
    """File name without its image suffix (``.ome.tif`` counts as one suffix)."""
    name = Path(path).name
    for suffix in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def run_slide(path: Path, engine: Engine, meta: WeightsMeta, cfg: InferConfig) -> SlideSummary:
    """Predict one slide and write ``<stem>.geojson``, ``<stem>.csv`` (and ``<stem>.tissue.png``) into ``out_dir``."""
    from tqdm import tqdm

    start = time.time()
    stem = output_stem(path)
    slide = open_slide(path, cfg.reader, cfg.mpp)
    try:
        slide_scale(slide, meta.mpp)  # fail early on a missing mpp
        mask = detect_tissue(slide, slide.mpp) if cfg.tissue_mask and slide.backend != "image" else None
        tiles = plan_tiles(slide, meta, cfg, mask)
        if not tiles:
            raise InputError(
                f"no tissue found in {Path(path).name}; check the slide, or pass --no-tissue-mask to process every tile"
            )
        with tqdm(total=len(tiles), desc=Path(path).name, unit="tile", disable=cfg.quiet, leave=False) as bar:
            nuclei, run, skipped = predict_slide(slide, engine, meta, cfg, tiles, bar)
    finally:
        slide.close()
    order = np.lexsort((nuclei.xy[:, 0], nuclei.xy[:, 1]))  # deterministic raster order in the outputs
    nuclei = Nuclei(nuclei.xy[order], nuclei.score[order], nuclei.class_id[order], nuclei.class_prob[order])
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    outputs = [cfg.out_dir / f"{stem}.geojson", cfg.out_dir / f"{stem}.csv"]
    write_geojson(outputs[0], nuclei, meta.classes)
    write_csv(outputs[1], nuclei, meta.classes)
    if mask is not None:
        outputs.append(cfg.out_dir / f"{stem}.tissue.png")
        with atomic_write(outputs[-1], "wb") as fh:
            mask.to_png().save(fh, format="PNG")
    per_class = {name: int((nuclei.class_id == i).sum()) for i, name in enumerate(meta.classes)}
    return SlideSummary(str(path), len(nuclei), per_class, run, skipped, time.time() - start, [str(o) for o in outputs])
