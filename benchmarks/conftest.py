"""Benchmark setup. ``MUSE_BENCH_QUICK=1`` (CI) shrinks sizes so the benchmarks run but never rot."""

import os

from muse_fast.kernels.registry import triton_interpret_default  # noqa: E402 - imports torch, never triton

# the interpreter only where there is no GPU; on a CUDA machine Triton runs compiled unless the caller sets it
os.environ.setdefault("TRITON_INTERPRET", triton_interpret_default())

import pytest  # noqa: E402

from muse_fast.train.data.paths import cmu_small_region  # noqa: E402

QUICK = os.environ.get("MUSE_BENCH_QUICK") == "1"


@pytest.fixture(scope="session")
def quick() -> bool:
    return QUICK


@pytest.fixture(scope="session")
def cmu_svs():
    path = cmu_small_region()  # the shared copy, else the README demo's
    if not path.exists():
        pytest.skip(f"{path} not found; run the README's demo command, which unpacks it, or set MUSE_DATA")
    return path


@pytest.fixture(scope="session", autouse=True)
def torch_engine_unless_named():
    """``infer`` runs on the torch engine here unless a benchmark names another: the cohort and Ray benchmarks time
    ``TorchEngine.run`` inside the run, and ``--engine auto`` (the CLI's default) could pick another engine."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MUSE_FAST_ENGINE", "torch")
        yield
