"""``OUT/<stem>.manifest.json``: the record that a slide is done, written last and atomically.

It holds the run's fingerprint (see :mod:`muse_fast.runtime.fingerprint`), the names and sizes of the slide's
outputs and its counts. A slide is done when its manifest exists, the fingerprint matches and every listed file
exists; anything else (no manifest, a missing file, an unreadable manifest) means its outputs are not final.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import OutputError
from ..output.atomic import atomic_write
from .fingerprint import differences, missing_outputs, nuclei_part, same_nuclei

MANIFEST_FORMAT = 1
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
    format: int = MANIFEST_FORMAT

    def complete(self, out_dir: Path) -> bool:
        """Every listed output is present."""
        return all((Path(out_dir) / name).is_file() for name in self.outputs)


def read_manifest(out_dir: Path, stem: str) -> Manifest | None:
    """The slide's manifest, or None when there is none or it is not a manifest of this format."""
    try:
        data = json.loads(manifest_path(out_dir, stem).read_text())
        if data.get("format") != MANIFEST_FORMAT:
            return None
        return Manifest(**data)
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
    return done if done.complete(out_dir) else None
