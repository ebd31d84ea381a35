"""Why the compiled engine's model-only speed varies between runs: fresh processes, each timing one setup alone.

    python benchmarks/compiled_spread.py [--processes 3] [--rounds 12] [--setups alone,after-eager,twice,after-onnx]

Each setup runs in its own fresh process (``--child SETUP``), ``--processes`` times, alternating setups:

- ``alone``: the compiled bf16 engine (loaded from its cached package), one warm-up batch, then ``rounds`` batches;
- ``after-eager``: torch bf16 eager runs one batch between timed compiled batches (as compare_engines interleaves);
- ``eager-built``: torch bf16 eager built and run once before the compiled engine is timed alone;
- ``after-onnx``: ONNX Runtime fp32 runs one batch between timed compiled batches;
- ``twice``: the compiled engine built a second time in the process (as ``auto`` after compare_engines' own), the
  second one timed;
- ``first-of-two``: built twice as in ``twice``, the first one timed;
- ``four-loads``: the compiled engine loaded four times in one process, each timed ``rounds`` batches right after
  its load (``per_load``: the median of each);
- ``loads``: the compiled engine loaded ``--loads`` times in one process; per load its median tiles/s, CPU share,
  where its shared library is mapped and the address of every buffer of 64 KB or more that one batch allocates
  (torch's profiler), to correlate speed with alignment (``--onednn-verbose DIR`` also writes each load's oneDNN
  verbose lines for two batches to ``DIR/PID-load-N.txt``); ``weights_realigned``: how many of its frozen weights
  the load left off 64-byte boundaries (copied aligned by ``muse_fast.runtime.aligned_package``) and
  ``weights_mod_64`` where the weights are now; ``loads+as-loaded`` leaves them where AOTInductor's load put them.

A setup ending in ``+thp`` runs with ``THP_MEM_ALLOC_ENABLE=1`` (torch's CPU allocator then asks for transparent huge
pages for allocations of 2 MB and more); one ending in ``+mallopt`` asks glibc never to map large blocks on their own
(``M_MMAP_MAX`` 0) and to keep freed memory (``M_TRIM_THRESHOLD``), before any engine is built.

Prints one JSON line per process: per-round tiles/s, their median, this process's CPU share while timing (CPU
seconds over wall seconds times threads) and the OpenMP runtimes mapped into the process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import replace

SETUPS = ("alone", "after-eager", "eager-built", "after-onnx", "twice", "first-of-two", "four-loads", "loads")


def per_load_detail(variant: str, rounds: int, batch_size: int, loads: int, verbose_dir: str | None) -> list[dict]:
    """``loads`` fresh loads of the compiled engine, each timed and its buffers' addresses recorded."""
    import torch

    from muse_fast.runtime import compiled
    from muse_fast.runtime.aligned_package import AlignedRunner, data_ptr

    if variant.endswith("+as-loaded"):  # the weights where AOTInductor's load put them (not realigned)
        compiled.load_package = lambda path: AlignedRunner(path, align=False)

    from muse_fast.model.weights import file_sha256, load_weights, resolve_weights
    from muse_fast.runtime.autotune import calibration_batch
    from muse_fast.runtime.engines import EngineInputs, create_engine

    model, meta = load_weights()
    inputs = EngineInputs(model, meta, file_sha256(resolve_weights(None)), "cpu", batch_size, "bf16")
    batch = calibration_batch(batch_size, meta.tile_size)
    kept, out = [], []
    for index in range(loads):
        before = _so_starts()
        engine = create_engine("compiled", inputs)
        kept.append(engine)
        so = sorted(_so_starts() - before)
        engine.run(batch)
        times, cpu = [], 0.0
        for _ in range(rounds):
            c0, t0 = time.process_time(), time.perf_counter()
            engine.run(batch)
            times.append(time.perf_counter() - t0)
            cpu += time.process_time() - c0
        buffers = _buffers(engine, batch)
        if verbose_dir:
            _verbose(engine, batch, os.path.join(verbose_dir, f"{os.getpid()}-load-{index}.txt"))
        out.append(
            {
                "tiles_per_s": round(batch_size / statistics.median(times), 1),
                "cpu_share": round(cpu / (sum(times) * torch.get_num_threads()), 3),
                "weights_realigned": len(getattr(engine.runner, "copies", {})),
                "weights_mod_64": sorted({data_ptr(t) % 64 for t in engine.runner.constants().values()}),
                "so_start_mod_2m": [s % (2 << 20) for s in so],
                "buffers": buffers,
            }
        )
    return out


def _so_starts() -> set[int]:
    with open("/proc/self/maps") as maps:
        return {int(line.split("-")[0], 16) for line in maps if "wrapper.so" in line}


def _buffers(engine, batch) -> list[list[int]]:
    """[bytes, address % 4096, address % 2 MiB] of each allocation of 64 KB or more in one batch, in order."""
    import tempfile

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        engine.run(batch)
    with tempfile.NamedTemporaryFile(suffix=".json") as trace:
        prof.export_chrome_trace(trace.name)
        events = json.load(open(trace.name))["traceEvents"]
    out = []
    for event in events:
        args = event.get("args", {})
        if event.get("name") == "[memory]" and args.get("Bytes", 0) >= 65536:
            out.append([args["Bytes"], args["Addr"] % 4096, args["Addr"] % (2 << 20)])
    return out


def _verbose(engine, batch, path: str) -> None:
    """oneDNN's verbose lines for two batches, written to ``path`` (stdout redirected at the file descriptor)."""
    import ctypes

    import torch

    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    libc.fflush(None)
    saved = os.dup(1)
    with open(path, "w") as sink:
        os.dup2(sink.fileno(), 1)
        try:
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                engine.run(batch)
                engine.run(batch)
            libc.fflush(None)
        finally:
            os.dup2(saved, 1)
            os.close(saved)


def child(variant: str, rounds: int, batch_size: int) -> dict:
    setup = variant.split("+")[0]
    if variant.endswith("+mallopt"):
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        assert libc.mallopt(-4, 0) == 1 and libc.mallopt(-1, 1 << 30) == 1  # M_MMAP_MAX, M_TRIM_THRESHOLD
    import resource

    import torch

    from muse_fast.model.weights import file_sha256, load_weights, resolve_weights
    from muse_fast.runtime.autotune import calibration_batch
    from muse_fast.runtime.engines import EngineInputs, create_engine

    model, meta = load_weights()
    inputs = EngineInputs(model, meta, file_sha256(resolve_weights(None)), "cpu", batch_size, "bf16")
    compiled = create_engine("compiled", inputs)
    other = None
    if setup == "twice":
        compiled = create_engine("compiled", inputs)
    elif setup == "first-of-two":
        second = create_engine("compiled", inputs)  # noqa: F841 - kept alive, not timed
    elif setup in ("after-eager", "eager-built"):
        other = create_engine("torch", inputs)
    elif setup == "after-onnx":
        other = create_engine("onnx", replace(inputs, precision="fp32"))
    batch = calibration_batch(batch_size, meta.tile_size)
    per_load = []
    if setup == "four-loads":
        kept = []
        for _ in range(4):
            engine = create_engine("compiled", inputs) if per_load else compiled
            kept.append(engine)
            engine.run(batch)
            times = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                engine.run(batch)
                times.append(time.perf_counter() - t0)
            per_load.append(round(batch_size / statistics.median(times), 1))
    compiled.run(batch)
    if other is not None:
        other.run(batch)
        if setup == "eager-built":
            other = None
    speeds, cpu, wall = [], 0.0, 0.0
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        c0, t0 = time.process_time(), time.perf_counter()
        compiled.run(batch)
        c1, t1 = time.process_time(), time.perf_counter()
        speeds.append(batch_size / (t1 - t0))
        cpu, wall = cpu + c1 - c0, wall + t1 - t0
        if other is not None:
            other.run(batch)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    with open("/proc/self/maps") as maps:
        omp = sorted({line.split()[-1] for line in maps if "omp" in line.rsplit("/", 1)[-1]})
    return {
        "setup": variant,
        "tiles_per_s": [round(s, 1) for s in speeds],
        "median": round(statistics.median(speeds), 1),
        "per_load": per_load,
        "cpu_share": round(cpu / (wall * torch.get_num_threads()), 3),
        "minor_faults_per_batch": round(faults / rounds),
        "threads": torch.get_num_threads(),
        "openmp_libraries": omp,
        "env": {
            k: v for k, v in os.environ.items() if k.startswith(("OMP_", "KMP_", "GOMP_", "MKL_", "ONEDNN", "THP_"))
        },
        "anon_huge_pages_kb": _anon_huge_kb(),
        "compiled_so": _so_mappings(),
    }


def _anon_huge_kb() -> int:
    with open("/proc/self/smaps_rollup") as smaps:
        return next((int(line.split()[1]) for line in smaps if line.startswith("AnonHugePages:")), 0)


def _so_mappings() -> list[dict]:
    """The compiled networks' shared libraries mapped here: kB resident and kB in huge pages, per mapping."""
    out, current = [], None
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
                current = {"path": fields[-1][-40:], "perm": fields[1]} if "wrapper.so" in line else None
                if current:
                    out.append(current)
            elif current is not None and fields[0] in ("Rss:", "FilePmdMapped:", "AnonHugePages:", "Size:"):
                current[fields[0].rstrip(":")] = int(fields[1])
    return [m for m in out if m.get("Size", 0) > 1024]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--setups", default="alone,after-eager")
    parser.add_argument("--loads", type=int, default=6, help="loads per process in the 'loads' setup")
    parser.add_argument("--onednn-verbose", help="with 'loads': write each load's oneDNN verbose lines here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child and args.child.split("+")[0] == "loads":
        detail = per_load_detail(args.child, args.rounds, args.batch, args.loads, args.onednn_verbose)
        print(json.dumps({"setup": args.child, "loads": detail}))
        return
    if args.child:
        print(json.dumps(child(args.child, args.rounds, args.batch)))
        return
    setups = args.setups.split(",")
    for _ in range(args.processes):
        for setup in setups:
            cmd = [sys.executable, __file__, "--child", setup, "--rounds", str(args.rounds), "--batch", str(args.batch)]
            cmd += ["--loads", str(args.loads)]
            cmd += ["--onednn-verbose", args.onednn_verbose] if args.onednn_verbose else []
            env = {**os.environ, **({"THP_MEM_ALLOC_ENABLE": "1"} if setup.endswith("+thp") else {})}
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
            print(out.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
