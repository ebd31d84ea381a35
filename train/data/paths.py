"""Where the read-only shared data lives: ``$MUSE_DATA``, else ``../shared/data`` beside the repository."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def shared_data_dir() -> Path:
    env = os.environ.get("MUSE_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


def brca_m2c_dir() -> Path:
    return shared_data_dir() / "brca-m2c"
