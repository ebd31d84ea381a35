"""Prototype: tiles read in a SCHED_IDLE child process, handed over through shared memory."""
import os, sys, time, tempfile
import multiprocessing as mp
from multiprocessing import shared_memory
import numpy as np
MODE = os.environ.get("MODE", "base")
SLOT = 16 * 224 * 224 * 3

def child(conn, path, shm_name, idle):
    if idle:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    from concurrent.futures import ThreadPoolExecutor
    from muse_fast.io.readers import open_slide
    from muse_fast.io.checked_read import read_tiles_checked
    from muse_fast.io.blocks import block_cache
    slides = {}
    shm = shared_memory.SharedMemory(name=shm_name)
    buf = np.ndarray((4, 16, 224, 224, 3), np.uint8, buffer=shm.buf)
    pool = ThreadPoolExecutor(1)
    while True:
        msg = conn.recv()
        if msg is None:
            break
        slot, path, origins, size, scale = msg
        if path not in slides:
            s = open_slide(path); slides[path] = (s, block_cache(s))
        s, cache = slides[path]
        images, bad = read_tiles_checked(s, origins, size, scale, pool, cache)
        for i, im in enumerate(images):
            buf[slot, i] = im
        conn.send((len(images), bad))
    del buf; shm.close()

if __name__ == "__main__":
    ctx = mp.get_context("fork")
    if MODE != "base":
        shm = shared_memory.SharedMemory(create=True, size=4 * SLOT)
        parent, kid = ctx.Pipe()
        proc = ctx.Process(target=child, args=(kid, None, shm.name, MODE == "idle"), daemon=True)
        proc.start()
    import threading
    from pathlib import Path
    from muse_fast.model.weights import file_sha256, load_weights, resolve_weights
    from muse_fast.runtime import pipeline
    from muse_fast.runtime.engines import EngineInputs, create_engine
    from muse_fast.config import InferConfig
    if MODE != "base":
        buf = np.ndarray((4, 16, 224, 224, 3), np.uint8, buffer=shm.buf)
        lock = threading.Lock(); counter = [0]
        def fake(slide, origins, size, scale, pool, cache=None):
            with lock:
                slot = counter[0] % 4; counter[0] += 1
                parent.send((slot, str(slide.path), origins, size, scale))
                n, bad = parent.recv()
            return [buf[slot, i].copy() for i in range(n)], bad
        pipeline.read_tiles_checked = fake
        pipeline.block_cache = lambda s: None
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
            t0 = time.perf_counter()
            pipeline.run_slide(Path(sys.argv[1]), engine, meta, InferConfig(out_dir=Path(tmp)/"o", batch_size=16, quiet=True), {"engine": "c"})
            t1 = time.perf_counter()
        net = sum(b - a for a, b in ev)
        gaps = sum(ev[i+1][0] - ev[i][1] for i in range(len(ev)-1))
        print(f"{MODE} e2e {t1-t0:.3f} net {net:.3f} gaps {gaps:.3f}", flush=True)
    engine.run = raw
    t = time.perf_counter()
    for _ in range(len(ev)): engine.run(x)
    print(f"{MODE} model-only {time.perf_counter() - t:.3f} for {len(ev)} calls", flush=True)
    if MODE != "base":
        parent.send(None); proc.join(); del buf; shm.close(); shm.unlink()
