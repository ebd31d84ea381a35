import sys, tempfile, time, threading, json
from pathlib import Path
import torch
sys.path.insert(0, "/work/main/benchmarks")
from amx_standin import ReplayEngine
from muse_fast.model.weights import file_sha256, load_weights, resolve_weights
from muse_fast.runtime.engines import EngineInputs, create_engine
from muse_fast.runtime.bench import bench_slide
from muse_fast.runtime import pipeline as P, predict
from muse_fast.io import resample
from muse_fast.config import InferConfig
model, meta = load_weights(); sha = file_sha256(resolve_weights(None))
real = create_engine("compiled", EngineInputs(model, meta, sha, "cpu", 16, "bf16"))
burner = create_engine("compiled", EngineInputs(model, meta, sha, "cpu", 4, "bf16"))
eng = ReplayEngine(real, lambda t: burner.run(t[:4]))
slide = Path(sys.argv[1]); modes = sys.argv[2].split(","); rounds = int(sys.argv[3])
bench_slide(slide, eng, meta, 16)
ev = []; T0 = [0]
def mark(kind, t0, t1): ev.append((kind, threading.get_ident(), t0 - T0[0], t1 - T0[0]))
def timed(mod, name, kind):
    f = getattr(mod, name)
    def w(*a, **k):
        t = time.perf_counter()
        try: return f(*a, **k)
        finally: mark(kind, t, time.perf_counter())
    setattr(mod, name, w)
timed(resample, "_read_strip", "read")
from muse_fast.runtime import shards
timed(P, "is_blank", "blank"); timed(shards.ShardStore, "write", "shard")
import numpy as _np
_stack = _np.stack
def stack(*a, **k):
    t = time.perf_counter()
    try: return _stack(*a, **k)
    finally:
        if threading.current_thread() is threading.main_thread(): mark("stack", t, time.perf_counter())
P.np.stack = stack
orig_iter = base_iter = P.iter_batches
def iter_timed(*a, **k):
    it = orig_iter(*a, **k)
    while True:
        t = time.perf_counter()
        try: r = next(it)
        except StopIteration: return
        mark("iter_next", t, time.perf_counter())
        yield r
P.iter_batches = iter_timed
orig_nfd = predict.nuclei_from_dense
idle = threading.Event(); idle.set(); state = {}
orig_open = P.open_slide
def open_gated(*a, **k):
    slide = orig_open(*a, **k)
    raw = slide.read_region
    def read_region(*ra, **rk):
        if state.get("gate"): idle.wait()  # each block read waits while the network runs
        return raw(*ra, **rk)
    slide.read_region = read_region
    return slide
P.open_slide = open_gated
orig_run = eng.run
def run(tiles):
    idle.clear(); t = time.perf_counter()
    try: return orig_run(tiles)
    finally:
        mark("net", t, time.perf_counter()); idle.set()
eng.run = run
def nfd(*a, **k):
    t = time.perf_counter()
    if state.get("one"): torch.set_num_threads(1)
    try: return orig_nfd(*a, **k)
    finally:
        if state.get("one"): torch.set_num_threads(2)
        mark("decode", t, time.perf_counter())
predict.nuclei_from_dense = nfd
import inspect, textwrap
src = inspect.getsource(base_iter)
late_src = src.replace("""            if queue:
                pending.append(submit(queue.pop(0)))
            images, bad = future.result()""", """            images, bad = future.result()""").replace("""            if keep:
                ids = [index * cfg.batch_size + i for i in keep]
                tiles_kept, pixels = [batch[i] for i in keep], np.stack([images[i] for i in keep])""", """            if keep:
                ids = [index * cfg.batch_size + i for i in keep]
                tiles_kept, pixels = [batch[i] for i in keep], np.stack([images[i] for i in keep])
            if queue:
                pending.append(submit(queue.pop(0)))
            if keep:""")
assert late_src != src
ns = dict(vars(P)); exec(compile(late_src.replace("def iter_batches", "def iter_late"), "late", "exec"), ns)
late_iter = ns["iter_late"]
def iter_choice(*a, **k):
    return (late_iter if state.get("late") else base_iter)(*a, **k)
orig_iter = iter_choice
out = {}
for r in range(rounds):
    for m in modes:
        state.clear(); state.update(gate="gate" in m, one="one" in m, late="late" in m)
        ev.clear(); T0[0] = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            s = P.run_slide(slide, eng, meta, InferConfig(out_dir=Path(tmp)/"o", batch_size=16, quiet=True), {"engine": "x"})
        net = [e for e in ev if e[0] == "net"]; reads = [e for e in ev if e[0] == "read"]; dec = [e for e in ev if e[0] == "decode"]
        # reads overlapping network calls
        def overlap(a, b): return max(0.0, min(a[3], b[3]) - max(a[2], b[2]))
        read_in_net = sum(overlap(rd, n) for rd in reads for n in net)
        read_total = sum(rd[3]-rd[2] for rd in reads)
        gaps = sum(net[i+1][2] - net[i][3] for i in range(len(net)-1))
        res = dict(mode=m, e2e=round(s.seconds,3), first_net_at=round(net[0][2],3), after_last=round(s.seconds-net[-1][3],3),
                   net=round(sum(n[3]-n[2] for n in net),3), gaps=round(gaps,3), decode=round(sum(d[3]-d[2] for d in dec),3),
                   read_wall=round(read_total,3), read_during_net=round(read_in_net,3),
                   **{k: round(sum(e[3]-e[2] for e in ev if e[0]==k),3) for k in ("blank","shard","stack","iter_next")})
        import numpy as _n
        fixed = _n.full((16, 224, 224, 3), 180, _n.uint8)
        outs = list(eng.outputs.values())[:56]
        t = time.perf_counter()
        for o in outs:
            burner.run(fixed[:4]); o.centre.clone(); o.fmap.clone()
        res["alone_56_calls"] = round(time.perf_counter() - t, 3)
        print(json.dumps(res), flush=True)
