"""``muse-fast bench``: end-to-end vs model-only throughput on the same batches of one slide."""

from __future__ import annotations

import resource
import time
from pathlib import Path

import numpy as np
import torch

from ..config import InferConfig
from ..io.readers import open_slide
from ..io.resample import read_at_scale
from ..model.weights import WeightsMeta
from .engines import Engine
from .pipeline import iter_batches, plan_tiles, predict_slide, slide_scale


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


def bench_slide(
    path: Path, engine: Engine, meta: WeightsMeta, batch_size: int, mpp: float | None = None, max_batches: int = 0
) -> dict:
    """Time the whole pipeline (read, infer, decode, merge) and the engine alone on the same tiles; report both."""
    cfg = InferConfig(out_dir=Path("."), batch_size=batch_size, skip_background=False, quiet=True)
    slide = open_slide(path, mpp=mpp)
    try:
        scale = slide_scale(slide, meta.mpp)
        tiles = plan_tiles(slide, meta, cfg.overlap, None)
        if max_batches:
            tiles = tiles[: max_batches * batch_size]
        # warm up both paths (kernel compilation or cache loading, allocator growth) outside the timings
        for _ in iter_batches(slide, engine, meta, cfg, tiles[:batch_size]):
            pass
        if engine.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(engine.device)
        start = time.perf_counter()
        nuclei = len(predict_slide(slide, engine, meta, cfg, tiles)[0].xy)  # after the overlap merge
        _sync(engine)
        end_to_end = time.perf_counter() - start
        batches = [
            np.stack(
                [
                    read_at_scale(slide, round(t.x * scale), round(t.y * scale), meta.tile_size, scale)
                    for t in tiles[i : i + batch_size]
                ]
            )
            for i in range(0, len(tiles), batch_size)
        ]
        start = time.perf_counter()
        for batch in batches:
            engine.run(batch)
        _sync(engine)
        model_only = time.perf_counter() - start
    finally:
        slide.close()
    w0, h0 = slide.level_dimensions[0]
    area = len(tiles) * (meta.tile_size * meta.mpp) ** 2 / 1e6
    return {
        "slide": str(path),
        "engine": engine.name,
        "precision": getattr(engine, "precision", "fp32"),
        "device": str(engine.device),
        "batch_size": batch_size,
        "tiles": len(tiles),
        "nuclei": nuclei,
        "end_to_end_tiles_per_s": len(tiles) / end_to_end,
        "model_only_tiles_per_s": len(tiles) / model_only,
        "pipeline_efficiency": model_only / end_to_end,
        "peak_rss_mb": peak_rss_mb(),
        "peak_gpu_memory_mb": peak_gpu_memory_mb(engine),
        "seconds_per_mm2": end_to_end / max(area, 1e-9),
        "slide_level0": [w0, h0],
    }
