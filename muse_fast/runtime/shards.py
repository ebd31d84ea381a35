"""Checkpoint shards: the nuclei of each finished batch, so a rerun after a crash continues where it stopped.

Shards live in ``OUT/.<stem>.partial/`` as ``batch_000042.npz`` written atomically, beside a fingerprint of
everything that determines the result (the slide file's identity, weights, engine, decode and tiling settings, batch
size, slide resolution, whether point features are kept: they are stored as float16). A rerun with another
fingerprint discards them, with one INFO line. Only the holder of the slide's lock (:mod:`muse_fast.runtime.lock`)
opens the folder, and it removes it after the manifest is written.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from ..output.atomic import atomic_write, remove_quietly
from .predict import Nuclei

SHARD_FORMAT = 3  # bump when the shard contents change, so older partial runs are not reused
log = logging.getLogger(__name__)


def shard_dir(out_dir: Path, stem: str) -> Path:
    return Path(out_dir) / f".{stem}.partial"


class ShardStore:
    def __init__(self, out_dir: Path, stem: str, fingerprint: dict) -> None:
        self.dir = shard_dir(out_dir, stem)
        text = json.dumps({**fingerprint, "shard_format": SHARD_FORMAT}, sort_keys=True)
        stamp = self.dir / "fingerprint.json"
        if self.dir.exists() and (not stamp.is_file() or stamp.read_text() != text):
            saved = len(list(self.dir.glob("batch_*.npz")))
            if saved:
                log.info("%s: discarding %d saved batches computed for another file or other settings", stem, saved)
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        if not stamp.exists():
            with atomic_write(stamp) as fh:
                fh.write(text)

    def _path(self, index: int) -> Path:
        return self.dir / f"batch_{index:06d}.npz"

    def has(self, index: int) -> bool:
        return self._path(index).exists()

    def write(self, index: int, nuclei: Nuclei, skipped: int, unreadable: dict[int, str] | None = None) -> None:
        """Checkpoint a batch: its nuclei, its blank tiles, and its tiles whose data could not be decoded (id: why)."""
        tmp = self.dir / f".batch_{index:06d}.{os.getpid()}.npz"
        unreadable = unreadable or {}
        try:
            with open(tmp, "wb") as fh:
                fields = {f: getattr(nuclei, f) for f in Nuclei.FIELDS if getattr(nuclei, f) is not None}
                if nuclei.feat is not None:
                    fields["feat"] = nuclei.feat.astype(np.float16)  # what the embeddings file stores
                np.savez(
                    fh,
                    skipped=np.int64(skipped),
                    unreadable_tiles=np.asarray(list(unreadable), np.int64),
                    unreadable_reasons=np.asarray(list(unreadable.values()), dtype=str),
                    **fields,
                )
            os.replace(tmp, self._path(index))
        finally:
            remove_quietly(tmp)

    def read(self, index: int, features: bool = True) -> tuple[Nuclei, int]:
        """A batch's nuclei (with their point features when saved and ``features``) and its count of blank tiles."""
        fields = [f for f in Nuclei.FIELDS if features or f != "feat"]
        with np.load(self._path(index)) as z:
            return Nuclei(**{f: z[f] for f in fields if f in z.files}), int(z["skipped"])

    def tally(self, n_batches: int) -> tuple[int, dict[int, str]]:
        """Over every checkpointed batch: blank tiles, and tile id -> reason for tiles that could not be decoded."""
        blank, unreadable = 0, {}
        for index in range(n_batches):
            with np.load(self._path(index)) as z:
                blank += int(z["skipped"])
                unreadable.update(zip(z["unreadable_tiles"].tolist(), z["unreadable_reasons"].tolist()))
        return blank, unreadable

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    @staticmethod
    def discard(out_dir: Path, stem: str) -> None:
        """Remove a slide's shards without opening them (its outputs are final)."""
        shutil.rmtree(shard_dir(out_dir, stem), ignore_errors=True)
