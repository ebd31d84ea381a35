"""``muse-fast bench``: a slide end to end (as ``infer`` runs it) against the engine alone, and where the time goes.

End to end is :func:`~.pipeline.run_slide` into a temporary folder: tissue mask, reads, network, peaks, writers, as
``infer`` with default settings; ``seconds_per_mm2`` divides by the tissue area as ``infer`` does. The stage breakdown
then times each stage alone, one after another, on the same tissue tiles (the first ``max_batches`` batches, if
given): ``tissue`` (mask and tile plan), ``read`` (tile reads with JPEG decode and resampling, ``cfg.workers``
threads, as the reader thread does them), ``model`` (the engine), ``peak_decode`` (peaks, point classes, ownership
filter) and ``writers`` (checkpoint shards, then GeoJSON, CSV, Parquet and PNGs). Their sum against end to end shows
what the pipeline overlaps; each stage's ``share`` is its seconds over that sum.
"""

from __future__ import annotations

import math
import resource
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..config import InferConfig
from ..io.blocks import block_cache
from ..io.checked_read import read_tiles_checked
from ..io.readers import open_slide
from ..io.tissue import detect_tissue
from ..model.weights import WeightsMeta
from ..output.atomic import StagedFiles
from .engines import Engine
from .outputs import write_outputs
from .pipeline import is_blank, output_stem, plan_tiles, run_slide, slide_scale
from .predict import Nuclei, nuclei_from_dense
from .shards import ShardStore

STAGES = ("tissue", "read", "model", "peak_decode", "writers")


def _sync(engine: Engine) -> None:
    if engine.device.type == "cuda":
        torch.cuda.synchronize()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def peak_gpu_memory_mb(engine: Engine) -> float | None:
    """Peak memory torch allocated on the engine's GPU since the timed run began (None on the CPU)."""
    if engine.device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(engine.device) / 2**20


class _Clock:
    """Seconds per stage, summed over calls."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(STAGES, 0.0)

    def time(self, stage: str, fn, *args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        self.seconds[stage] += time.perf_counter() - start
        return out


def stage_breakdown(
    path: Path, engine: Engine, meta: WeightsMeta, cfg: InferConfig, mpp: float | None, work: Path, max_batches: int = 0
) -> tuple[dict[str, float], int, int]:
    """Each stage timed alone on the slide's tissue tiles, the first ``max_batches`` batches if given (module doc);
    (seconds per stage, tiles run, tiles)."""
    clock = _Clock()
    slide = open_slide(path, cfg.reader, mpp)
    try:
        scale = slide_scale(slide, meta.mpp)
        use_mask = cfg.tissue_mask and slide.backend != "image"
        mask = clock.time("tissue", detect_tissue, slide, slide.mpp) if use_mask else None
        tiles = clock.time("tissue", plan_tiles, slide, meta, cfg.overlap, mask)
        if max_batches:
            tiles = tiles[: max_batches * cfg.batch_size]
        n_batches = math.ceil(len(tiles) / cfg.batch_size)
        store = ShardStore(work, "bench", {"bench": True})
        cache = block_cache(slide)
        run = 0
        with ThreadPoolExecutor(max(1, cfg.workers)) as pool:
            for index in range(n_batches):
                batch = tiles[index * cfg.batch_size : (index + 1) * cfg.batch_size]
                origins = [(round(t.x * scale), round(t.y * scale)) for t in batch]
                images, bad = clock.time("read", read_tiles_checked, slide, origins, meta.tile_size, scale, pool, cache)
                keep = [i for i, im in enumerate(images) if i not in bad and not is_blank(im)]
                nuclei = Nuclei.empty()
                if keep:
                    pixels = np.stack([images[i] for i in keep])
                    dense = clock.time("model", engine.run, pixels)
                    _sync(engine)
                    ids = [index * cfg.batch_size + i for i in keep]
                    kept = [batch[i] for i in keep]
                    nuclei = clock.time(
                        "peak_decode", nuclei_from_dense, engine, dense, kept, ids, pixels.shape[1:3], cfg.decode
                    )
                    run += len(keep)
                clock.time("writers", store.write, index, nuclei, len(batch) - len(keep) - len(bad), bad)
        with StagedFiles() as staged:  # never committed: the temporary files go when it closes
            clock.time(
                "writers",
                write_outputs,
                slide,
                store,
                tiles,
                n_batches,
                meta.classes,
                scale,
                work,
                "bench",
                mask,
                staged,
            )
    finally:
        slide.close()
    return clock.seconds, run, len(tiles)


def bench_slide(
    path: Path,
    engine: Engine,
    meta: WeightsMeta,
    batch_size: int,
    mpp: float | None = None,
    max_batches: int = 0,
    tissue_mask: bool = True,
    repeat: int = 1,
) -> dict:
    """End to end as ``infer`` runs the slide, model-only and the stage breakdown (module doc), as one dict.

    ``max_batches`` limits the stage breakdown (and so model-only) to the first batches; end to end is the whole slide.
    Without ``tissue_mask`` every tile is planned (``infer --no-tissue-mask``). With ``repeat`` > 1 the slide runs end
    to end that many times in this process, each into a new folder: the first run pays the process's one-time costs
    (imports, first calls), the later ones show a cohort's steady state (``later_runs``). The headline numbers are the
    first run's.
    """
    cfg = InferConfig(out_dir=Path("."), batch_size=batch_size, quiet=True, tissue_mask=tissue_mask)
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="muse-bench-") as tmp:
        engine.run(np.full((batch_size, meta.tile_size, meta.tile_size, 3), 200, np.uint8))  # warm-up outside timings
        _sync(engine)
        if engine.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(engine.device)
        summary = run_slide(path, engine, meta, replace(cfg, out_dir=Path(tmp) / "out"), {"engine": engine.name}, mpp)
        later = [
            run_slide(path, engine, meta, replace(cfg, out_dir=Path(tmp) / f"out{i}"), {"engine": engine.name}, mpp)
            for i in range(1, max(1, repeat))
        ]
        seconds, tiles_run, tiles_planned = stage_breakdown(
            path, engine, meta, cfg, mpp, Path(tmp) / "stages", max_batches
        )
    e2e_tiles_per_s = summary.tiles / summary.seconds
    model_tiles_per_s = tiles_run / max(seconds["model"], 1e-9)
    serial = sum(seconds.values())

    def efficiency(run) -> float:  # end to end over model only, in tiles/s
        return run.tiles / run.seconds / model_tiles_per_s

    return {
        "slide": str(path),
        "stem": output_stem(path),
        "engine": engine.name,
        "precision": getattr(engine, "precision", "fp32"),
        "device": str(engine.device),
        "batch_size": batch_size,
        "tiles": summary.tiles,  # tiles run end to end (tissue tiles that are not blank glass)
        "tiles_blank": summary.tiles_blank,
        "nuclei": summary.nuclei,
        "tissue_mm2": summary.area_mm2,
        "end_to_end_s": summary.seconds,
        "end_to_end_tiles_per_s": e2e_tiles_per_s,
        "model_only_tiles_per_s": model_tiles_per_s,
        "pipeline_efficiency": efficiency(summary),
        "seconds_per_mm2": summary.seconds_per_mm2,
        "stages": {
            "tiles": tiles_planned,
            "tiles_run": tiles_run,
            "seconds": {k: round(v, 3) for k, v in seconds.items()},
            "share": {k: round(v / max(serial, 1e-9), 3) for k, v in seconds.items()},
            "serial_sum_s": round(serial, 3),
        },
        "later_runs": [
            {
                "end_to_end_s": r.seconds,
                "seconds_per_mm2": r.seconds_per_mm2,
                "pipeline_efficiency": efficiency(r),
            }
            for r in later
        ],
        "peak_rss_mb": peak_rss_mb(),
        "peak_gpu_memory_mb": peak_gpu_memory_mb(engine),
    }
