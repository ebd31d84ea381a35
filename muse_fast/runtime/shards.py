"""Checkpoint shards: the nuclei of each finished batch, so a rerun after a crash continues where it stopped.

Shards live in ``OUT/.<stem>.partial/`` as ``batch_000042.npz`` written atomically, beside a fingerprint of
everything that determines the result (weights, engine, decode and tiling settings, slide resolution). A rerun with
another fingerprint starts afresh. The folder is removed once the final outputs are committed.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from .predict import Nuclei

SHARD_FORMAT = 2  # bump when the shard contents change, so older partial runs are not reused


class ShardStore:
    def __init__(self, out_dir: Path, stem: str, fingerprint: dict) -> None:
        self.dir = Path(out_dir) / f".{stem}.partial"
        text = json.dumps({**fingerprint, "shard_format": SHARD_FORMAT}, sort_keys=True)
        stamp = self.dir / "fingerprint.json"
        if self.dir.exists() and (not stamp.exists() or stamp.read_text() != text):
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        if not stamp.exists():
            stamp.write_text(text)

    def _path(self, index: int) -> Path:
        return self.dir / f"batch_{index:06d}.npz"

    def has(self, index: int) -> bool:
        return self._path(index).exists()

    def write(self, index: int, nuclei: Nuclei, skipped: int) -> None:
        tmp = self.dir / f".batch_{index:06d}.{os.getpid()}.npz"
        with open(tmp, "wb") as fh:
            fields = {f: getattr(nuclei, f) for f in Nuclei.FIELDS}
            np.savez(fh, skipped=np.int64(skipped), **fields)
        os.replace(tmp, self._path(index))

    def read(self, index: int) -> tuple[Nuclei, int]:
        with np.load(self._path(index)) as z:
            return Nuclei(*(z[f] for f in Nuclei.FIELDS)), int(z["skipped"])

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
