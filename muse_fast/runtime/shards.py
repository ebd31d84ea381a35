"""Checkpoint shards: the nuclei of each finished batch, so a rerun after a crash continues where it stopped.

Shards live in ``OUT/.<stem>.partial/`` as ``batch_000042.npz`` written atomically, beside a fingerprint of
everything that determines the result (the slide file's identity, weights, engine, decode and tiling settings, batch
size, slide resolution, whether point features are kept: they are stored as float16). A rerun with another
fingerprint discards them, with one INFO line. Only the holder of the slide's lock (:mod:`muse_fast.runtime.lock`)
opens the folder, and it removes it after the manifest is written. The folder is never a link (a link there is
refused before any work, see :mod:`muse_fast.runtime.ownership`) and removing it never follows one.

While the slide's final files are renamed, and until the manifest lists them, ``outputs.json`` in the folder names
the files that are muse-fast's (the new ones and the previous manifest's), so that a run stopped in between still
knows them for its own (:func:`recorded_outputs`).
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import numpy as np

from ..errors import OutputError
from ..output.atomic import atomic_write, remove_quietly
from ..output.regular import check_folder, check_regular, is_folder, is_regular, open_new
from .predict import Nuclei

MEMORY_ROWS = 2_000_000  # nuclei whose fields (not their features) a store also keeps in memory, about 80 MB
SHARD_FORMAT = 3  # bump when the shard contents change, so older partial runs are not reused
OUTPUTS_RECORD = "outputs.json"
log = logging.getLogger(__name__)


def shard_dir(out_dir: Path, stem: str) -> Path:
    return Path(out_dir) / f".{stem}.partial"


def recorded_outputs(out_dir: Path, stem: str) -> set[str]:
    """The file names that a run stopped while renaming the slide's outputs recorded as its own (empty if none)."""
    record = shard_dir(out_dir, stem) / OUTPUTS_RECORD
    text = _read_regular(record) if is_folder(record.parent) else None
    try:
        names = json.loads(text) if text is not None else []
    except ValueError:
        return set()
    return {n for n in names if isinstance(n, str)} if isinstance(names, list) else set()


def _read_regular(path: Path) -> str | None:
    """The text of ``path`` when it is a regular file (never a link or a FIFO), else None."""
    if not is_regular(path):
        return None
    try:
        return path.read_text()
    except (OSError, ValueError):
        return None


SHARD_FIELDS = ("skipped", "unreadable_tiles", "unreadable_reasons", "xy", "score", "class_id", "class_prob")


def readable_shard(path: Path) -> bool:
    """Whether ``path`` is a whole shard: a zip whose every member reads back (zipfile checks each one's CRC) and
    holds the fields every shard has."""
    try:
        with np.load(path) as z:
            for name in z.files:
                z[name]
            return set(SHARD_FIELDS) <= set(z.files)
    except Exception:  # noqa: BLE001 - damage shows as any of zipfile's and numpy's errors (BadZipFile, EOFError,
        return False  # NotImplementedError for a flipped compression method, RuntimeError for a flipped encryption bit)


# the names muse-fast writes in a checkpoint folder: its stamp and record, shards, and their temporary names
OURS = re.compile(r"fingerprint\.json|outputs\.json|batch_\d{6,}\.npz|\.batch_\d{6,}\.\d+\.npz|\..+\.\d+\.partial")


def foreign_entries(folder: Path) -> list[str]:
    """Names in ``folder`` that muse-fast does not write there (anything but its files, or not a regular file)."""
    return sorted(
        e.name for e in os.scandir(folder) if not (OURS.fullmatch(e.name) and e.is_file(follow_symlinks=False))
    )


def remove_checkpoints(folder: Path) -> None:
    """Remove muse-fast's files in ``folder``, then the folder if nothing else is in it: anyone else's file stays."""
    if not is_folder(folder):
        return
    for name in set(os.listdir(folder)) - set(foreign_entries(folder)):
        remove_quietly(folder / name)
    try:
        os.rmdir(folder)
    except OSError:
        pass


class ShardStore:
    def __init__(self, out_dir: Path, stem: str, fingerprint: dict) -> None:
        self.dir = shard_dir(out_dir, stem)
        check_folder(self.dir, "the checkpoint folder of muse-fast")
        foreign = foreign_entries(self.dir) if self.dir.exists() else []
        if foreign:
            listed = ", ".join(foreign[:3]) + (" ..." if len(foreign) > 3 else "")
            raise OutputError(
                f"{self.dir.name} in {self.dir.parent} holds {listed}, which muse-fast did not write, and it is the "
                f"name of muse-fast's checkpoint folder; move those out of it, or pass another --out"
            )
        text = json.dumps({**fingerprint, "shard_format": SHARD_FORMAT}, sort_keys=True)
        stamp = self.dir / "fingerprint.json"
        kept: set[str] = set()
        if self.dir.exists() and _read_regular(stamp) != text:
            saved = len(list(self.dir.glob("batch_*.npz")))
            if saved:
                log.info("%s: discarding %d saved batches computed for another file or other settings", stem, saved)
            kept = recorded_outputs(out_dir, stem)  # they still name files of ours, whatever the batches were
            remove_checkpoints(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._memory: dict[int, tuple[Nuclei, int, dict[int, str]]] = {}  # index -> what write() saved, no features
        self._memory_rows = 0
        self._with_features: set[int] = set()
        if not is_regular(stamp):
            self._write(stamp, text)
        if kept:
            self.record_outputs(kept)

    @staticmethod
    def _write(path: Path, text: str) -> None:
        with atomic_write(path) as fh:
            fh.write(text)

    def record_outputs(self, names: set[str]) -> None:
        """Name the slide's files that are muse-fast's, before the manifest that lists them is replaced."""
        self._write(self.dir / OUTPUTS_RECORD, json.dumps(sorted(names)))

    def _path(self, index: int) -> Path:
        return self.dir / f"batch_{index:06d}.npz"

    def has(self, index: int) -> bool:
        """Whether batch ``index`` is checkpointed and readable. A damaged shard (cut short, a bit flipped: a crash
        or a failing disk) is removed with one warning, so the batch runs again instead of failing every rerun."""
        path = self._path(index)
        if not path.exists():
            return False
        if readable_shard(path):
            return True
        log.warning("%s: checkpoint %s is damaged; running that batch again", self.dir.name, path.name)
        remove_quietly(path)
        return False

    def write(self, index: int, nuclei: Nuclei, skipped: int, unreadable: dict[int, str] | None = None) -> None:
        """Checkpoint a batch: its nuclei, its blank tiles, and its tiles whose data could not be decoded (id: why)."""
        tmp = self.dir / f".batch_{index:06d}.{os.getpid()}.npz"
        unreadable = unreadable or {}
        check_regular(tmp, "a temporary file of muse-fast")
        remove_quietly(tmp)  # left by a process that had our pid
        try:
            with open_new(tmp, "wb") as fh:
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
        if self._memory_rows + len(nuclei) <= MEMORY_ROWS:  # the final pass reads it back three times
            kept = Nuclei(**{f: getattr(nuclei, f) for f in Nuclei.FIELDS if f != "feat"})
            self._memory[index] = (kept, int(skipped), dict(unreadable))
            self._memory_rows += len(nuclei)
            if nuclei.feat is not None:
                self._with_features.add(index)  # those are read from disk whenever features are asked for

    def read(self, index: int, features: bool = True) -> tuple[Nuclei, int]:
        """A batch's nuclei (with their point features when saved and ``features``) and its count of blank tiles."""
        fields = [f for f in Nuclei.FIELDS if features or f != "feat"]
        if index in self._memory and ("feat" not in fields or index not in self._with_features):
            nuclei, skipped, _ = self._memory[index]
            return Nuclei(**{f: getattr(nuclei, f) for f in Nuclei.FIELDS if f != "feat"}), skipped
        with np.load(self._path(index)) as z:
            return Nuclei(**{f: z[f] for f in fields if f in z.files}), int(z["skipped"])

    def tally(self, n_batches: int) -> tuple[int, dict[int, str]]:
        """Over every checkpointed batch: blank tiles, and tile id -> reason for tiles that could not be decoded."""
        blank, unreadable = 0, {}
        for index in range(n_batches):
            if index in self._memory:
                _, skipped, bad = self._memory[index]
                blank += skipped
                unreadable.update(bad)
                continue
            with np.load(self._path(index)) as z:
                blank += int(z["skipped"])
                unreadable.update(zip(z["unreadable_tiles"].tolist(), z["unreadable_reasons"].tolist()))
        return blank, unreadable

    def remove(self) -> None:
        remove_checkpoints(self.dir)

    @staticmethod
    def discard(out_dir: Path, stem: str) -> None:
        """Remove a slide's shards without opening them (its outputs are final)."""
        remove_checkpoints(shard_dir(out_dir, stem))
