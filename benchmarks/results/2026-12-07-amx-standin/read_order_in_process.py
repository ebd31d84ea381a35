"""The order of the next read in the CPU pipeline, A/B in one process under muse-fast bench with the AMX stand-in:
queued before this batch's glass test (as shipped) or after it and the stacking.

    python read_order_in_process.py SLIDE ROUNDS
"""

import sys, json, inspect, statistics as st
from pathlib import Path
sys.path.insert(0, "/work/main/benchmarks")
from amx_standin import ReplayEngine
from muse_fast.model.weights import file_sha256, load_weights, resolve_weights
from muse_fast.runtime.engines import EngineInputs, create_engine
from muse_fast.runtime.bench import bench_slide
from muse_fast.runtime import pipeline as P
model, meta = load_weights(); sha = file_sha256(resolve_weights(None))
real = create_engine("compiled", EngineInputs(model, meta, sha, "cpu", 16, "bf16"))
burner = create_engine("compiled", EngineInputs(model, meta, sha, "cpu", 4, "bf16"))
eng = ReplayEngine(real, lambda t: burner.run(t[:4]))
slide = Path(sys.argv[1]); rounds = int(sys.argv[2])
early = P.iter_batches  # as shipped: the next read queued before this batch's glass test
src = inspect.getsource(early)
late_src = src.replace("""            if queue:
                pending.append(submit(queue.pop(0)))
            images, bad = future.result()""", """            images, bad = future.result()""")
late_src = late_src.replace("""            if keep:
                ids = [index * cfg.batch_size + i for i in keep]
                tiles_kept, pixels = [batch[i] for i in keep], np.stack([images[i] for i in keep])""", """            pixels = np.stack([images[i] for i in keep]) if keep else None
            if queue:  # queued after the glass test and the stacking (commit 5f3600f, reverted)
                pending.append(submit(queue.pop(0)))
            if keep:
                ids = [index * cfg.batch_size + i for i in keep]
                tiles_kept = [batch[i] for i in keep]""")
assert late_src.count("pending.append(submit(queue.pop(0)))") == 1 and late_src != src
ns = dict(vars(P)); exec(compile(late_src, "late", "exec"), ns); late = ns["iter_batches"]
bench_slide(slide, eng, meta, 16)
res = {"late": [], "early": []}
for r in range(rounds):
    for name, fn in (("early", early), ("late", late)) if r % 2 else (("late", late), ("early", early)):
        P.iter_batches = fn
        eng.calls = []
        out = bench_slide(slide, eng, meta, 16)
        calls = (len(eng.calls) - 1) // 2
        net = sum(eng.calls[1:1 + calls])
        res[name].append({"e2e": round(out["end_to_end_s"], 3), "outside": round(out["end_to_end_s"] - net, 3), "eff": round(out["pipeline_efficiency"], 3), "nuclei": out["nuclei"]})
        print(name, res[name][-1], flush=True)
print(json.dumps({k: {"median_e2e": st.median(x["e2e"] for x in v), "median_outside": st.median(x["outside"] for x in v), "median_eff": st.median(x["eff"] for x in v)} for k, v in res.items()}))
print("paired e2e late-early:", [round(a["e2e"] - b["e2e"], 3) for a, b in zip(res["late"], res["early"])])
print("paired outside late-early:", [round(a["outside"] - b["outside"], 3) for a, b in zip(res["late"], res["early"])])
