"""The finished runs in an output folder, as ``muse-fast view`` shows them: only what ``infer`` wrote.

A slide is shown when its manifest (``<stem>.manifest.json``, written last by ``infer``) is readable and lists a CSV
or Parquet table that exists. The slide image is found at the path the manifest records, or in the SLIDE the user
passes (a file, or a folder holding the slide under its original name); without it the nuclei show on a blank canvas.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..post.classes import class_colour
from .points import table_for

log = logging.getLogger(__name__)
MANIFEST_SUFFIX = ".manifest.json"


@dataclass
class SlideRun:
    """One slide's finished outputs in ``out_dir``; ``slide_path`` is None when the image cannot be found."""

    stem: str
    out_dir: Path
    manifest: dict
    table: Path
    slide_path: Path | None

    @property
    def classes(self) -> tuple[str, ...]:
        """The model's classes in id order (weights adapted to other class sets bring their own)."""
        model = self.manifest.get("fingerprint", {}).get("model", {})
        names = model.get("classes") or sorted(self.manifest.get("per_class", {}))
        return tuple(names)

    def colours(self) -> list[tuple[int, int, int]]:
        return [class_colour(name, i) for i, name in enumerate(self.classes)]

    def output(self, suffix: str) -> Path | None:
        """``<stem>.<suffix>`` when the manifest lists it and it exists (never a path built from a request)."""
        name = f"{self.stem}.{suffix}"
        path = self.out_dir / name
        return path if name in self.manifest.get("outputs", {}) and path.is_file() else None


def _read_manifest(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("outputs"), dict) else None


def _find_slide(manifest: dict, given: Path | None) -> Path | None:
    recorded = Path(str(manifest.get("slide", "")))
    candidates = []
    if given is not None:
        candidates.append(given / recorded.name if given.is_dir() else given)
    candidates.append(recorded)
    size = manifest.get("fingerprint", {}).get("file", {}).get("size")
    for path in candidates:
        if path.name == recorded.name and path.is_file():
            if size is not None and path.stat().st_size != size:
                log.warning("%s is not the slide this run read (size differs); it is not shown", path)
                continue
            return path.resolve()
    return None


def find_runs(out_dir: Path, slide: Path | None = None) -> list[SlideRun]:
    """Every finished slide run in ``out_dir``, by stem; an :class:`InputError` naming what is missing if none."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise InputError(f"output folder not found: {out_dir}; pass the --out folder of a muse-fast infer run")
    if slide is not None and not slide.exists():
        raise InputError(f"slide not found: {slide}; pass the slide file (or its folder) that infer read")
    runs, unfinished = [], []
    for path in sorted(out_dir.glob(f"*{MANIFEST_SUFFIX}")):
        stem = path.name[: -len(MANIFEST_SUFFIX)]
        manifest = _read_manifest(path)
        table = table_for(out_dir, stem, manifest["outputs"]) if manifest else None
        if manifest is None or table is None:
            unfinished.append(stem)
            continue
        runs.append(SlideRun(stem, out_dir, manifest, table, _find_slide(manifest, slide)))
    if slide is not None and slide.is_file():
        runs = [r for r in runs if Path(str(r.manifest.get("slide", ""))).name == slide.name] or runs
    if not runs:
        what = f"unreadable or incomplete manifests: {', '.join(unfinished)}" if unfinished else "no *.manifest.json"
        raise InputError(
            f"no finished run in {out_dir} ({what}); run muse-fast infer SLIDE --out {out_dir} first, or let it finish"
        )
    return runs
