"""Start-up cost of the compiled engine: a first process compiles the shipped network, a second loads the package.

    python benchmarks/compiled_startup.py [--batch 16]

Each step runs in a fresh process with a fresh cache folder shared by both; prints JSON with each process's wall
seconds to build the engine (weights loaded before the clock starts), whether it compiled, and inductor's counters.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

STEP = """
import json, sys, time
import torch
from torch._dynamo.utils import counters
from muse_fast.model.weights import file_sha256, load_weights, resolve_weights
from muse_fast.runtime.engines import EngineInputs, create_engine
model, meta = load_weights()
inputs = EngineInputs(model, meta, file_sha256(resolve_weights(None)), "cpu", int(sys.argv[1]), "bf16")
start = time.perf_counter()
engine = create_engine("compiled", inputs)
seconds = time.perf_counter() - start
inductor = sum(v for v in counters["inductor"].values())
print(json.dumps({"engine": engine.name, "compiled_now": engine.compiled_now, "seconds": round(seconds, 2),
                  "inductor_counter_total": inductor}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "MUSE_FAST_CACHE": cache}
        runs = []
        for _ in range(2):
            done = subprocess.run(
                [sys.executable, "-c", STEP, str(args.batch)], env=env, capture_output=True, text=True, check=True
            )
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(json.dumps({"first_process": runs[0], "second_process": runs[1], "batch": args.batch}))


if __name__ == "__main__":
    main()
