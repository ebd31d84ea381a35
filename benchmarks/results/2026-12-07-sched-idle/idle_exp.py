import os, time, tempfile, sys
from pathlib import Path
import numpy as np
from concurrent.futures import ThreadPoolExecutor
from muse_fast.model.weights import file_sha256, load_weights, resolve_weights
from muse_fast.runtime import pipeline
from muse_fast.runtime.engines import EngineInputs, create_engine
from muse_fast.config import InferConfig
MODE = os.environ.get("MODE", "base")
PROBE = os.environ.get("PROBE") == "1"
if PROBE:
    raw_blank = pipeline.is_blank
    def is_blank(tile):
        px = tile.shape[0] * tile.shape[1]
        if pipeline.stained_count(tile[:2]) / px >= pipeline.BLANK_FRACTION:
            return False
        return raw_blank(tile)
    pipeline.is_blank = is_blank
def idle():
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
def nice():
    os.setpriority(os.PRIO_PROCESS, 0, 19)  # per-thread on Linux (tid 0 = caller)
class TPE(ThreadPoolExecutor):
    def __init__(self, n, **k):
        super().__init__(n, initializer={"idle": idle, "nice": nice}[MODE])
if MODE != "base":
    pipeline.ThreadPoolExecutor = TPE
model, meta = load_weights()
engine = create_engine("compiled", EngineInputs(model, meta, file_sha256(resolve_weights(None)), "cpu", 16))
x = np.full((16, 224, 224, 3), 200, np.uint8); engine.run(x)
ev = []
raw = engine.run
def run(*a):
    t = time.perf_counter(); o = raw(*a); ev.append((t, time.perf_counter())); return o
engine.run = run
for r in range(int(os.environ.get("RUNS", 3))):
    ev.clear()
    with tempfile.TemporaryDirectory() as tmp:
        c0 = time.process_time(); t0 = time.perf_counter()
        pipeline.run_slide(Path(sys.argv[1]), engine, meta, InferConfig(out_dir=Path(tmp)/"o", batch_size=16, quiet=True), {"engine": "c"})
        t1 = time.perf_counter(); c1 = time.process_time()
    net = sum(b - a for a, b in ev)
    gaps = sum(ev[i+1][0] - ev[i][1] for i in range(len(ev)-1))
    print(f"{MODE} P{int(PROBE)} e2e {t1-t0:.3f} net {net:.3f} gaps {gaps:.3f} cpu {c1-c0:.2f}", flush=True)
engine.run = raw
t = time.perf_counter()
for _ in range(len(ev)): engine.run(x)
print(f"{MODE} P{int(PROBE)} model-only {time.perf_counter() - t:.3f} for {len(ev)} calls", flush=True)
