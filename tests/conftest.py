"""Shared fixtures. TRITON_INTERPRET must be set before anything imports triton (style rule 5)."""

import os

from muse_fast.kernels.registry import triton_interpret_default  # noqa: E402 - imports torch, never triton

# the interpreter only where there is no GPU; on a CUDA machine Triton runs compiled unless the caller sets it
os.environ.setdefault("TRITON_INTERPRET", triton_interpret_default())

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

import muse_fast.kernels.peaks.types as peak_types  # noqa: E402
from muse_fast.train.data.paths import shared_data_dir  # noqa: E402

DATA = shared_data_dir()


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared data not found at {path}; set MUSE_DATA to the folder holding brca-m2c/ and wsi/")
    return path


@pytest.fixture(scope="session")
def brca_dir() -> Path:
    return _need(DATA / "brca-m2c")


@pytest.fixture(scope="session")
def cmu_svs() -> Path:
    return _need(DATA / "wsi" / "CMU-1-Small-Region.svs")


@pytest.fixture(scope="session")
def ome_tif() -> Path:
    return _need(DATA / "wsi" / "OS-1-detail.ome.tif")


@pytest.fixture(scope="session")
def keys_dir() -> Path:
    return _need(DATA / "muse-official-keys")


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Tests (and the processes they start) use a cache of their own, never the user's ~/.cache/muse-fast."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MUSE_FAST_CACHE", str(tmp_path_factory.mktemp("muse-fast-cache")))
        yield


@pytest.fixture(autouse=True)
def loud_unwritten_outputs(monkeypatch):
    """Kernel outputs start as NaN / -1 in tests, so a slot an implementation forgets to write is visible."""
    monkeypatch.setattr(peak_types, "FILL_UNWRITTEN_LOUDLY", True)
