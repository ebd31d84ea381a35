"""Start (before the first network call), between calls and end (after the last) of bench's end-to-end run under the AMX
stand-in: python phases.py SLIDE {burn,free} RUNS, from a tree's root with PYTHONPATH=<tree>; one JSON line a run."""
import sys, time, json
sys.path.insert(0, "benchmarks")
import amx_standin as s
from muse_fast.runtime import bench
from pathlib import Path
from muse_fast.model.weights import file_sha256, load_weights, resolve_weights
from muse_fast.runtime.engines import EngineInputs, create_engine
from muse_fast.runtime.bench import bench_slide

model, meta = load_weights()
sha = file_sha256(resolve_weights(None))
real = create_engine("compiled", EngineInputs(model, meta, sha, "cpu", 16, "bf16"))
burner = create_engine("compiled", EngineInputs(model, meta, sha, "cpu", 4, "bf16"))
mode = sys.argv[2]
eng = s.ReplayEngine(real, (lambda t: burner.run(t[:4])) if mode == "burn" else None)
stamps = []
orig_run = eng.run
def run(tiles):
    a = time.perf_counter(); out = orig_run(tiles); stamps.append((a, time.perf_counter())); return out
eng.run = run
slide = Path(sys.argv[1])
bench_slide(slide, eng, meta, 16, max_batches=0)
orig = bench.run_slide
span = []
def timed(*a, **k):
    stamps.clear(); t0 = time.perf_counter()
    try:
        return orig(*a, **k)
    finally:
        span.append((t0, time.perf_counter(), list(stamps)))
bench.run_slide = timed
for i in range(int(sys.argv[3])):
    span.clear()
    r = bench_slide(slide, eng, meta, 16, max_batches=0)
    t0, t1, st = span[0]
    net = sum(b - a for a, b in st)
    gaps = [st[i + 1][0] - st[i][1] for i in range(len(st) - 1)]
    print(json.dumps({"e2e": round(t1 - t0, 3), "ratio": round(r["pipeline_efficiency"], 3), "calls": len(st),
                      "start": round(st[0][0] - t0, 3), "end": round(t1 - st[-1][1], 3), "net": round(net, 3),
                      "gaps": round(sum(gaps), 3), "max_gap": round(max(gaps), 3)}), flush=True)
