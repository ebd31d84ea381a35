"""Model-only CPU tiles/s of engines and precisions side by side, in one process (interleaved rounds).

    python benchmarks/compare_engines.py torch:fp32 torch:bf16 onnx:fp32 onnx:int8 auto [--batch 16] [--rounds 5]
        [--threads 1]

Each spec is ``ENGINE:PRECISION`` or ``auto`` (``--engine auto``: the choice cached for this machine, measured first
if there is none). Prints JSON: the median tiles/s of each spec over ``rounds`` interleaved timings of one batch, so
all see the same machine load, the ratio of each to the first spec, this process's CPU share while timing (well under
1: other work had the CPU), and the CPU, its bf16 units and the versions.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from dataclasses import replace

import torch

from muse_fast.model.weights import file_sha256, load_weights, resolve_weights
from muse_fast.runtime.autotune import calibration_batch, versions
from muse_fast.runtime.bounds import usable_cpus
from muse_fast.runtime.engines import EngineInputs, create_engine
from muse_fast.runtime.precision import cpu_bf16_units, cpu_model_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs", nargs="+")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch and ORT threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, meta = load_weights()
    inputs = EngineInputs(model, meta, file_sha256(resolve_weights(None)), "cpu", args.batch)
    engines = {}
    for spec in args.specs:
        name, _, precision = spec.partition(":")
        engine = create_engine(name, replace(inputs, precision=precision or "auto"))
        engines[spec] = engine
    batch = calibration_batch(args.batch, meta.tile_size)
    times: dict[str, list[float]] = {spec: [] for spec in engines}
    for engine in engines.values():
        engine.run(batch)  # warm-up
    clock = time.perf_counter(), time.process_time()
    for _ in range(args.rounds):
        for spec, engine in engines.items():
            start = time.perf_counter()
            engine.run(batch)
            times[spec].append(time.perf_counter() - start)
    wall, cpu = time.perf_counter() - clock[0], time.process_time() - clock[1]
    speeds = {spec: round(args.batch / statistics.median(t), 2) for spec, t in times.items()}
    first = speeds[args.specs[0]]
    result = {
        "tiles_per_s": speeds,
        "ratio_to_first": {spec: round(v / first, 2) for spec, v in speeds.items()},
        "resolved": {spec: f"{e.name} {getattr(e, 'precision', 'fp32')}" for spec, e in engines.items()},
        "batch": args.batch,
        "rounds": args.rounds,
        "threads": torch.get_num_threads(),
        # CPU seconds over wall seconds times threads while timing: well under 1, other work had the CPU
        "cpu_share": round(cpu / (wall * min(torch.get_num_threads(), usable_cpus())), 3),
        "cpu": cpu_model_name(),
        "bf16_units": cpu_bf16_units(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "machine": platform.machine(),
        **versions(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
