"""Start-up and per-image overhead: a cohort of BRCA-M2C tiles through ``muse-fast infer FOLDER --out DIR``.

- ``test_cohort``: ``muse_fast.cli.main`` in-process on a folder of BRCA-M2C images (491x491 px at 0.5 um/px,
  9 tiles each; 100 images, 5 with ``MUSE_BENCH_QUICK=1``), after a 2-image warm-up run. ``extra_info`` holds images/s
  (fastest round), the engine's model-only time on the same tiles (timed separately, one ``engine.run`` per image
  as in the pipeline) and the overhead beyond it, per image and as a share of model time; the same against the
  engine's time inside the run; and the load average, since the machine may be shared.
- ``test_cohort_overhead_only``: the same run with the network replaced by a replay of real outputs, so all of
  its time is per-image overhead (wall and process CPU, ms per image).
- ``test_first_kernel_call``: the first ``find_peaks`` + ``gather_points`` call (numba) in a fresh process, with an
  empty numba cache (the first process on a machine) and with a warm one (every later process).
- ``test_one_image_cli``: ``python -m muse_fast infer ONE.png --mpp 0.5`` in a fresh process (numba cache warm):
  wall and CPU seconds, start-up included.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

BRCA_MPP = 0.5  # muse_fast.train.data.brca.BRCA_MPP; the PNGs record no resolution, so it is passed as --mpp
QUICK = os.environ.get("MUSE_BENCH_QUICK") == "1"
N_IMAGES = 5 if QUICK else 100


@pytest.fixture(scope="module")
def images() -> list[Path]:
    from muse_fast.train.data.paths import brca_m2c_dir

    folder = brca_m2c_dir() / "images"
    found = sorted(folder.glob("*.png")) if folder.is_dir() else []
    if len(found) < N_IMAGES:
        pytest.skip(f"{N_IMAGES} BRCA-M2C images needed in {folder}, found {len(found)}; set MUSE_DATA")
    return found[:N_IMAGES]


def _folder(paths: list[Path], folder: Path) -> Path:
    """A folder holding (links to) ``paths``, as a user would pass it."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in paths:
        try:
            (folder / path.name).symlink_to(path)
        except OSError:
            (folder / path.name).write_bytes(path.read_bytes())
    return folder


@pytest.fixture(scope="module")
def cohort(images, tmp_path_factory) -> Path:
    return _folder(images, tmp_path_factory.mktemp("cohort"))


def _warm_up(images: list[Path], out: Path) -> None:
    """One small cohort run first (2 images), so that the timed rounds see a warm process (numba kernels, torch)."""
    from muse_fast.cli import main

    folder = _folder(images[:2], out.parent / "warm_cohort")
    assert main(["infer", str(folder), "--out", str(out), "--mpp", str(BRCA_MPP), "--quiet", "--overwrite"]) == 0


def _model_batches(paths: list[Path]) -> list[np.ndarray]:
    """The batches of tiles the pipeline sends to the engine for ``paths`` (blank tiles dropped, as it does)."""
    from concurrent.futures import ThreadPoolExecutor

    from muse_fast.config import InferConfig
    from muse_fast.io.readers import open_slide
    from muse_fast.io.resample import read_tiles
    from muse_fast.model.weights import load_weights
    from muse_fast.runtime.pipeline import is_blank, plan_tiles

    _, meta = load_weights()
    cfg, batches = InferConfig(out_dir=Path(".")), []
    with ThreadPoolExecutor(2) as pool:
        for path in paths:
            slide = open_slide(path, mpp=BRCA_MPP)
            tiles = plan_tiles(slide, meta, cfg.overlap, None)
            for i in range(0, len(tiles), cfg.batch_size):
                origins = [(t.x, t.y) for t in tiles[i : i + cfg.batch_size]]  # scale 1: model mpp == image mpp
                pixels = [p for p in read_tiles(slide, origins, meta.tile_size, 1.0, pool) if not is_blank(p)]
                if pixels:
                    batches.append(np.stack(pixels))
            slide.close()
    return batches


def _model_seconds(batches: list[np.ndarray], passes: int) -> float:
    """Engine-only seconds for one pass over ``batches`` (one ``engine.run`` each), best of ``passes``."""
    import torch

    from muse_fast.model.weights import load_weights
    from muse_fast.runtime.engines import TorchEngine

    engine = TorchEngine(load_weights()[0], "cpu")
    engine.run(batches[0])  # warm-up, as the timed cohort had one
    best = float("inf")
    for _ in range(passes):
        start = time.perf_counter()
        for batch in batches:
            out = engine.run(batch)
            if out.fmap.is_cuda:
                torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def test_cohort(benchmark, cohort, images, tmp_path, monkeypatch):
    """Images/s of a cohort run, and its overhead beyond model time, against two model times: the engine timed
    separately on the same batches, and the engine's own share of the same run (robust on a shared machine)."""
    from muse_fast.cli import main
    from muse_fast.runtime import engines

    run, in_run = engines.TorchEngine.run, []

    def timed_run(self, tiles):
        start = time.perf_counter()
        try:
            return run(self, tiles)
        finally:
            in_run[-1] += time.perf_counter() - start

    monkeypatch.setattr(engines.TorchEngine, "run", timed_run)  # measures only; the engine is unchanged
    args = ["infer", str(cohort), "--out", str(tmp_path / "out"), "--mpp", str(BRCA_MPP), "--quiet", "--overwrite"]

    def cohort_run() -> int:
        in_run.append(0.0)
        return main(args)

    in_run.append(0.0)
    _warm_up(images, tmp_path / "warm")
    in_run.clear()
    rounds = 1 if QUICK else 2
    assert benchmark.pedantic(cohort_run, rounds=rounds) == 0
    walls = benchmark.stats.stats.data
    best = min(range(rounds), key=lambda r: walls[r])
    wall, engine = walls[best], in_run[best]
    batches = _model_batches(images)
    model = _model_seconds(batches, 1)
    n = len(images)
    benchmark.extra_info.update(
        images=n,
        tiles=sum(len(b) for b in batches),
        load_average=round(os.getloadavg()[0], 1),
        images_per_second=round(n / wall, 3),
        cohort_seconds=round(wall, 2),
        model_seconds=round(model, 2),
        overhead_ms_per_image=round(1000 * (wall - model) / n, 1),
        overhead_pct_of_model=round(100 * (wall - model) / model, 1),
        engine_seconds_in_run=round(engine, 2),
        overhead_in_run_ms_per_image=round(1000 * (wall - engine) / n, 1),
        overhead_in_run_pct=round(100 * (wall - engine) / engine, 1),
    )


def test_cohort_overhead_only(benchmark, cohort, images, tmp_path, monkeypatch):
    """The same cohort run with the network taken out: the engine replays the dense outputs of its first batch (real
    outputs, so decoding and writing do the usual work), so every second measured is per-image overhead."""
    from muse_fast.cli import main
    from muse_fast.runtime import engines

    run, replay = engines.TorchEngine.run, {}

    def replay_run(self, tiles):
        if len(tiles) not in replay:
            replay[len(tiles)] = run(self, tiles)
        return replay[len(tiles)]

    monkeypatch.setattr(engines.TorchEngine, "run", replay_run)
    args = ["infer", str(cohort), "--out", str(tmp_path / "out"), "--mpp", str(BRCA_MPP), "--quiet", "--overwrite"]
    cpu = []

    def cohort_run() -> int:
        start = time.process_time()
        try:
            return main(args)
        finally:
            cpu.append(time.process_time() - start)

    _warm_up(images, tmp_path / "warm")
    cpu.clear()
    assert benchmark.pedantic(cohort_run, rounds=1 if QUICK else 3) == 0
    n = len(images)
    benchmark.extra_info.update(
        images=n,
        load_average=round(os.getloadavg()[0], 1),
        overhead_ms_per_image=round(1000 * benchmark.stats.stats.min / n, 1),
        overhead_cpu_ms_per_image=round(1000 * min(cpu) / n, 1),  # all threads of the process
    )


FIRST_CALL = r"""
import json, time
t0 = time.perf_counter()
import torch
from muse_fast.kernels.peaks import find_peaks
from muse_fast.kernels.point_gather import gather_points
heat = torch.rand(9, 56, 56, generator=torch.Generator().manual_seed(0))
t1 = time.perf_counter()
peaks = find_peaks(heat, 0.3, 1, 2048, impl="numba")
t2 = time.perf_counter()
k = int(peaks.counts.max())
xy = 4.0 * peaks.yx[:, :k].flip(-1).float()
gather_points(torch.randn(9, 64, 56, 56), xy, (224, 224), peaks.counts, impl="numba")
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "find_peaks_s": t2 - t1, "gather_points_s": t3 - t2}))
"""


def _fresh(args: list[str], env: dict) -> tuple[dict | None, float, float]:
    """Run ``python args`` in a fresh process: (its last JSON line or None, wall seconds, CPU seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert done.returncode == 0, done.stderr[-3000:]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    lines = done.stdout.strip().splitlines()
    return (json.loads(lines[-1]) if lines and lines[-1].startswith("{") else None), wall, cpu


def test_first_kernel_call(benchmark, tmp_path):
    pytest.importorskip("numba")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    cold, _, _ = _fresh(["-c", FIRST_CALL], env)  # empty cache: compiles (once per machine)
    warm = benchmark.pedantic(lambda: _fresh(["-c", FIRST_CALL], env)[0], rounds=1 if QUICK else 3)
    for name, times in (("cold_cache", cold), ("warm_cache", warm)):
        benchmark.extra_info.update({f"{name}_{k}": round(v, 3) for k, v in times.items()})


def test_one_image_cli(benchmark, images, tmp_path):
    pytest.importorskip("numba")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    args = ["-m", "muse_fast", "infer", str(images[0]), "--out", str(tmp_path / "out"), "--mpp", str(BRCA_MPP)]
    args += ["--quiet", "--overwrite"]
    _, cold_wall, cold_cpu = _fresh(args, env)  # fills the numba cache
    runs = []
    benchmark.pedantic(lambda: runs.append(_fresh(args, env)), rounds=1 if QUICK else 3)
    benchmark.extra_info.update(
        cold_cache_wall_s=round(cold_wall, 2),
        cold_cache_cpu_s=round(cold_cpu, 2),
        warm_cache_wall_s=round(float(np.mean([r[1] for r in runs])), 2),
        warm_cache_cpu_s=round(float(np.mean([r[2] for r in runs])), 2),
    )
