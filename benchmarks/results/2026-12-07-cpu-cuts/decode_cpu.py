"""CPU seconds of peak decoding on every batch of a slide: flat rows against the tile-by-tile reference.

    python benchmarks/results/2026-12-07-cpu-cuts/decode_cpu.py SLIDE [--rounds 5]

The compiled engine's outputs for each batch are computed once and kept; then each round decodes all of them with
each path, alternating, timing the calling thread's CPU (``time.thread_time``) and wall time. Prints JSON.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np

from muse_fast.config import InferConfig
from muse_fast.io.checked_read import read_tiles_checked
from muse_fast.io.readers import open_slide
from muse_fast.io.tissue import detect_tissue
from muse_fast.model.weights import file_sha256, load_weights, resolve_weights
from muse_fast.post.decode import decode_batch
from muse_fast.runtime import predict
from muse_fast.runtime.engines import EngineInputs, create_engine
from muse_fast.runtime.pipeline import is_blank, plan_tiles, slide_scale


def reference(engine, dense, tiles, ids, hw, cfg):
    per_tile = decode_batch(dense.centre, dense.fmap, engine.classify, hw, 4, cfg)
    return predict.nuclei_per_tile(per_tile, tiles, ids, predict.MergeConfig(), False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("slide", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    model, meta = load_weights()
    engine = create_engine("compiled", EngineInputs(model, meta, file_sha256(resolve_weights(None)), "cpu", 16, "bf16"))
    cfg = InferConfig(out_dir=Path("."))
    slide = open_slide(args.slide)
    scale = slide_scale(slide, meta.mpp)
    tiles = plan_tiles(slide, meta, cfg.overlap, detect_tissue(slide, slide.mpp))
    batches = []
    for start in range(0, len(tiles), 16):
        batch = tiles[start : start + 16]
        origins = [(round(t.x * scale), round(t.y * scale)) for t in batch]
        images, _ = read_tiles_checked(slide, origins, meta.tile_size, scale, None)
        keep = [i for i, im in enumerate(images) if not is_blank(im)]
        if keep:
            dense = engine.run(np.stack([images[i] for i in keep]))
            batches.append((dense, [batch[i] for i in keep], [start + i for i in keep]))
    paths = {"flat": predict.nuclei_from_dense, "reference": reference}
    result = {name: {"cpu_s": [], "wall_s": [], "nuclei": []} for name in paths}
    for _ in range(args.rounds):
        for name, fn in paths.items():
            cpu, wall, found = time.thread_time(), time.perf_counter(), 0
            for dense, kept, ids in batches:
                found += len(fn(engine, dense, kept, ids, (meta.tile_size, meta.tile_size), cfg.decode))
            result[name]["cpu_s"].append(round(time.thread_time() - cpu, 4))
            result[name]["wall_s"].append(round(time.perf_counter() - wall, 4))
            result[name]["nuclei"].append(found)
    print(json.dumps({"slide": str(args.slide), "batches": len(batches), **result}))


if __name__ == "__main__":
    main()
