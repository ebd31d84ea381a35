"""``OUT/<stem>.manifest.json``: the record that a slide is done, written last and atomically.

It holds the run's fingerprint (see :mod:`muse_fast.runtime.fingerprint`), the names, sizes and digests of the
slide's outputs and its counts. A slide is done when its manifest exists, the fingerprint matches and every listed
file is still a regular file of its recorded size and digest (a BLAKE2b of its first and last 64 KiB: cheap on any
file, and it catches truncation, a file cut and padded back, and damage near either end). Manifests written before
digests were recorded are checked on sizes only: their outputs were complete when written, and running every slide
of a finished cohort again to add a digest would cost more than it guards. Anything else (no manifest, a missing,
short or changed file, an unreadable manifest) means the slide's outputs are not final: it runs again, with one line
saying why.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..errors import OutputError
from ..output.atomic import atomic_write
from ..output.regular import is_regular
from .fingerprint import differences, missing_outputs, nuclei_part, same_nuclei

MANIFEST_FORMAT = 1
DIGEST_BYTES = 1 << 16  # hashed at each end of an output file
log = logging.getLogger(__name__)


def manifest_path(out_dir: Path, stem: str) -> Path:
    return Path(out_dir) / f"{stem}.manifest.json"


@dataclass
class Manifest:
    slide: str
    fingerprint: dict
    outputs: dict[str, int]  # file name in the output folder -> bytes
    nuclei: int = 0
    per_class: dict[str, int] = field(default_factory=dict)
    tiles: int = 0
    tiles_blank: int = 0
    area_mm2: float = 0.0
    unreadable_regions: list[list[int]] = field(default_factory=list)  # level-0 [x, y, w, h] of damaged tiles
    digests: dict[str, str] = field(default_factory=dict)  # file name -> output_digest (absent in older manifests)
    density_per_mm2: dict[str, float] = field(default_factory=dict)  # class -> nuclei per mm^2 of tissue
    class_colours: list[list[int]] = field(default_factory=list)  # RGB per class id, as drawn (absent in older ones)
    format: int = MANIFEST_FORMAT

    def damage(self, out_dir: Path) -> str | None:
        """Why the listed outputs are not as written (the first file that is missing, short or changed), or None."""
        for name, size in self.outputs.items():
            if Path(name).name != name:
                return f"the manifest lists {name}, which is not a file name"
            path = Path(out_dir) / name
            if not is_regular(path):
                return f"{name} is missing" if not os.path.lexists(path) else f"{name} is not a regular file"
            found = path.stat().st_size
            if found != size:
                return f"{name} is {found:,} bytes, not the {size:,} written"
            if name in self.digests and output_digest(path) != self.digests[name]:
                return f"{name} changed since it was written (the hash of its first and last 64 KiB differs)"
        return None


def output_digest(path: Path) -> str:
    """BLAKE2b (128 bits) of the first and last :data:`DIGEST_BYTES` of ``path`` (never through a link)."""
    digest = hashlib.blake2b(digest_size=16)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(fd, "rb") as fh:
        size = os.fstat(fd).st_size
        digest.update(fh.read(DIGEST_BYTES))
        if size > DIGEST_BYTES:
            fh.seek(max(DIGEST_BYTES, size - DIGEST_BYTES))
            digest.update(fh.read(DIGEST_BYTES))
    return digest.hexdigest()


def measure_outputs(files: list[Path]) -> tuple[dict[str, int], dict[str, str]]:
    """A manifest's ``outputs`` (name -> size) and ``digests`` (name -> :func:`output_digest`) for ``files``."""
    return {f.name: f.stat().st_size for f in files}, {f.name: output_digest(f) for f in files}


def read_manifest(out_dir: Path, stem: str) -> Manifest | None:
    """The slide's manifest, or None when there is none or it is not a manifest of this format."""
    try:
        data = json.loads(manifest_path(out_dir, stem).read_text())
        if data.get("format") != MANIFEST_FORMAT:
            return None
        known = {f.name for f in fields(Manifest)}  # a later version's added fields are not ours to read
        return Manifest(**{k: v for k, v in data.items() if k in known})
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def write_manifest(out_dir: Path, stem: str, manifest: Manifest) -> Path:
    path = manifest_path(out_dir, stem)
    with atomic_write(path) as fh:
        json.dump(asdict(manifest), fh, indent=2, sort_keys=True)
        fh.write("\n")
    return path


def finished_manifest(out_dir: Path, stem: str, fingerprint: dict, name: str) -> Manifest | None:
    """The manifest of a slide done under ``fingerprint`` with every listed file present, else None.

    Raises :class:`OutputError` when the folder holds finished results of ``name`` under another fingerprint. A run
    that only adds outputs (``--embeddings`` on a slide done without) gets None: the slide is run again, in full.
    """
    done = read_manifest(out_dir, stem)
    if done is None:
        return None
    if not same_nuclei(done.fingerprint, fingerprint):
        raise OutputError(
            f"{out_dir} already holds results of {name} that this run would not reproduce "
            f"({differences(nuclei_part(done.fingerprint), nuclei_part(fingerprint))}); pass --overwrite to replace "
            "them, or another --out"
        )
    missing = missing_outputs(done.fingerprint, fingerprint)
    if missing:
        log.info("%s: done without %s; running it again to add them", name, ", ".join(missing))
        return None
    damage = done.damage(out_dir)
    if damage is not None:
        log.warning("%s: %s; running it again", name, damage)
        return None
    return done
