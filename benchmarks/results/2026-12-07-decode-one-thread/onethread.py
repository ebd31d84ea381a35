"""Alternate: decode between network batches with torch at 1 thread vs as shipped (2)."""
import time, tempfile, sys, numpy as np, torch
from pathlib import Path
from dataclasses import replace
from muse_fast.cli import _build_engine
from muse_fast.config import InferConfig
import muse_fast.runtime.predict as predict
from muse_fast.runtime.pipeline import run_slide
engine, meta, sha = _build_engine("compiled", None, "cpu", 16)
engine.run(np.full((16,224,224,3),200,np.uint8))
cfg = InferConfig(out_dir=Path('.'), batch_size=16, quiet=True)
slide = Path(sys.argv[1]); rounds = int(sys.argv[2]); first = sys.argv[3]
real = predict.nuclei_from_dense
def one_thread(*a, **k):
    n = torch.get_num_threads(); torch.set_num_threads(1)
    try: return real(*a, **k)
    finally: torch.set_num_threads(n)
res = {"ship": [], "one": []}
with tempfile.TemporaryDirectory() as tmp:
    run_slide(slide, engine, meta, replace(cfg, out_dir=Path(tmp)/'w'), {}, None)
    i = 0
    modes = ["one", "ship"] if first == "one" else ["ship", "one"]
    for r in range(rounds):
        for mode in modes:
            predict.nuclei_from_dense = one_thread if mode == "one" else real
            s = time.perf_counter(); c0 = time.process_time()
            summ = run_slide(slide, engine, meta, replace(cfg, out_dir=Path(tmp)/f'o{i}'), {}, None); i += 1
            res[mode].append((round(time.perf_counter()-s, 3), round(time.process_time()-c0, 2), summ.nuclei))
for k, v in res.items(): print(k, v)
