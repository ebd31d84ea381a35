"""Slides/s of a cohort on Ray with 1 and 2 CPU workers on this machine, beside the same cohort run locally.

``muse_fast.cli.main(["infer", FOLDER, "--out", DIR, "--mpp", "0.5", "--quiet", "--overwrite", "--ray", "auto",
"--workers-per-node", N])`` in-process, on a local Ray cluster of this machine's CPUs (bound to 127.0.0.1), started
once for the module; the folder holds the first 16 BRCA-M2C images (491x491 px at 0.5 um/px, 9 tiles each; 4 with
``MUSE_BENCH_QUICK=1``). ``local`` is the same command without ``--ray``. ``extra_info`` holds slides/s over the whole
call (worker start-up included: each worker imports torch and builds its engine), the start-up (until the first
worker is ready), slides/s after it, the threads per worker, and the load average, since the machine may be shared.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "runtime"))
from ray_cluster import local_cluster  # noqa: E402

QUICK = os.environ.get("MUSE_BENCH_QUICK") == "1"
N_IMAGES = 4 if QUICK else 16


@pytest.fixture(scope="module")
def cluster():
    with local_cluster(num_cpus=os.cpu_count()) as ray:  # the tests' cluster, on all CPUs
        yield ray


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    from muse_fast.train.data.paths import brca_m2c_dir

    found = sorted((brca_m2c_dir() / "images").glob("*.png"))
    if len(found) < N_IMAGES:
        pytest.skip(f"{N_IMAGES} BRCA-M2C images needed in {brca_m2c_dir() / 'images'}, found {len(found)}")
    folder = tmp_path_factory.mktemp("cohort")
    for path in found[:N_IMAGES]:
        (folder / path.name).symlink_to(path)
    return folder


@pytest.mark.parametrize("workers", ["local", 1, 2])
def test_ray_cohort(benchmark, cluster, cohort, tmp_path, workers):
    from muse_fast.cli import main

    out = tmp_path / "out"
    args = ["infer", str(cohort), "--out", str(out), "--mpp", "0.5", "--quiet", "--overwrite"]
    if workers != "local":
        args += ["--ray", "auto", "--workers-per-node", str(workers)]
    ray_runs = []

    def run() -> int:
        code = main(args)
        if workers != "local":
            ray_runs.append(json.loads((out / "run_summary.json").read_text())["ray"])
        return code

    rounds = 1 if QUICK else 2
    assert benchmark.pedantic(run, rounds=rounds) == 0
    walls = benchmark.stats.stats.data
    best = min(range(rounds), key=lambda r: walls[r])
    info = {"images": N_IMAGES, "load_average": round(os.getloadavg()[0], 1)}
    info["slides_per_second"] = round(N_IMAGES / walls[best], 3)
    if ray_runs:
        ray = ray_runs[best]
        info.update(
            startup_seconds=ray["startup_seconds"],
            slides_per_second_after_startup=round(N_IMAGES / max(ray["seconds"] - ray["startup_seconds"], 1e-9), 3),
            threads_per_worker=ray["threads_per_worker"],
        )
    benchmark.extra_info.update(info)
