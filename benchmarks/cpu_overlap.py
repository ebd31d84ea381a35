"""End to end with and without the CPU pipeline's overlap (decode of batch i in a worker thread while the engine runs
batch i + 1), alternating, on one slide.

    python benchmarks/cpu_overlap.py SLIDE [--engine compiled] [--rounds 2]

Prints JSON: end-to-end seconds of each round per mode (``muse-fast bench``'s end to end: ``infer`` on the slide into
a temporary folder) and the nuclei found, which must agree.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from muse_fast.model.weights import file_sha256, load_weights, resolve_weights
from muse_fast.runtime import pipeline
from muse_fast.runtime.bench import bench_slide
from muse_fast.runtime.engines import EngineInputs, create_engine

MODES = {"serial": {"cuda"}, "overlap": {"cuda", "cpu"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("slide", type=Path)
    parser.add_argument("--engine", default="compiled")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    model, meta = load_weights()
    engine = create_engine(args.engine, EngineInputs(model, meta, file_sha256(resolve_weights(None)), "cpu", 16))
    result: dict = {mode: {"end_to_end_s": [], "nuclei": []} for mode in MODES}
    for _ in range(args.rounds):
        for mode, devices in MODES.items():
            pipeline.OVERLAP_DEVICES = devices
            run = bench_slide(args.slide, engine, meta, 16, max_batches=1)
            result[mode]["end_to_end_s"].append(round(run["end_to_end_s"], 2))
            result[mode]["nuclei"].append(run["nuclei"])
    print(json.dumps({"slide": str(args.slide), "engine": f"{engine.name} {engine.precision}", **result}))


if __name__ == "__main__":
    main()
