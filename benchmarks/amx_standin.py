"""The pipeline around a network as fast as on an AMX Xeon, measured on a CPU without AMX.

    python benchmarks/amx_standin.py SLIDE [--burn-batch 4] [--rounds 3] [--modes burn,free]

On a CPU whose network is several times slower than with AMX, end to end over model only says little about how the
pipeline would keep up with the faster network. This stand-in keeps the rest of the pipeline as it is and replaces
the network: the real compiled engine's outputs for each batch are recorded once, then returned again (copied, as a
network writes them) after ``burn``: the same compiled network run on the first ``--burn-batch`` tiles of the batch,
which keeps both cores busy under the GIL as the real one does, for about ``burn_batch / batch`` of its time. Pick
``--burn-batch`` so that model only comes out near the AMX Xeon's (about 200 tiles/s for batches of 16).

Modes: ``burn`` (the stand-in above) and ``free`` (outputs returned at once: the run's time is then all the work
that is not the network, the CPU a faster network leaves the pipeline). Each round runs ``muse-fast bench``'s code
(:func:`~muse_fast.runtime.bench.bench_slide`) once per mode, alternating; prints one JSON line per run and a JSON
summary. The nuclei are the real engine's, so each run must find the same number. ``cpu_s`` is the CPU time of the
whole process (every thread) during the end-to-end run, which a busy host inflates less than wall time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from muse_fast.model.registry import DenseOutputs
from muse_fast.model.weights import file_sha256, load_weights, resolve_weights
from muse_fast.runtime.bench import bench_slide
from muse_fast.runtime.engines import EngineInputs, create_engine


class ReplayEngine:
    """The real engine's outputs per batch (keyed by a sample of its pixels), recorded on first sight, then replayed
    after ``burn`` (or at once when ``burn`` is None). ``calls`` holds each replayed call's seconds."""

    def __init__(self, real, burn=None) -> None:
        self.real, self.burn = real, burn
        self.name, self.device, self.precision = real.name, real.device, real.precision
        self.outputs: dict[bytes, DenseOutputs] = {}
        self.calls: list[float] = []

    @staticmethod
    def key(tiles: np.ndarray) -> bytes:
        sample = np.ascontiguousarray(tiles[:, ::7, ::7])
        return hashlib.blake2b(sample.tobytes(), digest_size=16).digest() + bytes(str(tiles.shape), "ascii")

    def record(self, tiles: np.ndarray) -> DenseOutputs:
        out = self.real.run(tiles)
        self.outputs[self.key(tiles)] = DenseOutputs(out.centre.clone(), out.fmap.clone())
        return out

    @torch.inference_mode()
    def run(self, tiles: np.ndarray) -> DenseOutputs:
        key = self.key(tiles)
        if key not in self.outputs:
            return self.record(tiles)
        start = time.perf_counter()
        if self.burn is not None:
            self.burn(tiles)
        out = self.outputs[key]
        out = DenseOutputs(out.centre.clone(), out.fmap.clone())
        self.calls.append(time.perf_counter() - start)
        return out

    def classify(self, feats: torch.Tensor) -> torch.Tensor:
        return self.real.classify(feats)


class _CpuOfRun:
    """Process CPU seconds spent inside :func:`~muse_fast.runtime.pipeline.run_slide` (bench's end-to-end run)."""

    def __enter__(self):
        from muse_fast.runtime import bench

        self.seconds, self.bench, self.original = 0.0, bench, bench.run_slide

        def timed(*args, **kwargs):
            start = time.process_time()
            try:
                return self.original(*args, **kwargs)
            finally:
                self.seconds += time.process_time() - start

        bench.run_slide = timed
        return self

    def __exit__(self, *exc) -> None:
        self.bench.run_slide = self.original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("slide", type=Path)
    parser.add_argument("--burn-batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", default="burn,free")
    args = parser.parse_args()
    model, meta = load_weights()
    sha = file_sha256(resolve_weights(None))
    real = create_engine("compiled", EngineInputs(model, meta, sha, "cpu", 16, "bf16"))
    burner = create_engine("compiled", EngineInputs(model, meta, sha, "cpu", args.burn_batch, "bf16"))
    k = args.burn_batch

    def burn(tiles: np.ndarray) -> None:
        burner.run(tiles[:k])

    engines = {"burn": ReplayEngine(real, burn), "free": ReplayEngine(real)}
    modes = args.modes.split(",")
    recorder = engines[modes[0]]
    bench_slide(args.slide, recorder, meta, 16, max_batches=0)  # records every batch (real network, not reported)
    for mode in modes[1:]:
        engines[mode].outputs = recorder.outputs
    runs = []
    for round_ in range(args.rounds):
        for mode in modes:
            engine = engines[mode]
            engine.calls = []
            cpu = _CpuOfRun()
            with cpu:
                run = bench_slide(args.slide, engine, meta, 16, max_batches=0)
            calls = (len(engine.calls) - 1) // 2  # a warm-up call, the run's, then the stage breakdown's same ones
            in_run = sum(engine.calls[1 : 1 + calls])
            line = {
                "mode": mode,
                "round": round_,
                "end_to_end_s": round(run["end_to_end_s"], 3),
                "cpu_s": round(cpu.seconds, 3),
                "network_calls_in_run_s": round(in_run, 3),
                "outside_network_s": round(run["end_to_end_s"] - in_run, 3),
                "model_only_tiles_per_s": round(run["model_only_tiles_per_s"], 1),
                "pipeline_efficiency": round(run["pipeline_efficiency"], 3),
                "stages_s": run["stages"]["seconds"],
                "nuclei": run["nuclei"],
            }
            runs.append(line)
            print(json.dumps(line), flush=True)
    print(json.dumps({"slide": str(args.slide), "burn_batch": k, "runs": runs}))


if __name__ == "__main__":
    main()
