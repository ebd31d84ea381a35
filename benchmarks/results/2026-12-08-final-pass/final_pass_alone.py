"""The final pass (write_outputs) of a slide run timed alone: the mosaic run 2 + 8 times end to end in one process
with the network's outputs replayed at once (benchmarks/amx_standin.py's ReplayEngine, no burn); prints the
8 timed passes' seconds and their CPU seconds (every thread of the process) as one JSON line.

    PYTHONPATH=<tree> python final_pass_alone.py SLIDE   (from the tree's root, so its benchmarks/ is found)
"""

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path.cwd() / "benchmarks"))
import amx_standin  # noqa: E402

from muse_fast.config import InferConfig  # noqa: E402
from muse_fast.model.weights import file_sha256, load_weights, resolve_weights  # noqa: E402
from muse_fast.runtime import pipeline  # noqa: E402
from muse_fast.runtime.engines import EngineInputs, create_engine  # noqa: E402

model, meta = load_weights()
sha = file_sha256(resolve_weights(None))
engine = amx_standin.ReplayEngine(create_engine("compiled", EngineInputs(model, meta, sha, "cpu", 16, "bf16")))
slide = Path(sys.argv[1])
wall, cpu = [], []
original = pipeline.write_outputs


def timed(*args, **kwargs):
    start, start_cpu = time.perf_counter(), time.process_time()
    try:
        return original(*args, **kwargs)
    finally:
        wall.append(round(time.perf_counter() - start, 3))
        cpu.append(round(time.process_time() - start_cpu, 3))


pipeline.write_outputs = timed
for _ in range(10):
    with tempfile.TemporaryDirectory() as folder:
        pipeline.run_slide(slide, engine, meta, InferConfig(out_dir=Path(folder), quiet=True), {})
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
print(json.dumps({"commit": commit, "write_outputs_s": wall[2:], "write_outputs_cpu_s": cpu[2:]}))
