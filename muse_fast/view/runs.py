"""The finished runs in an output folder, as ``muse-fast view`` shows them: only what ``infer`` wrote.

A slide is shown when its manifest (``<stem>.manifest.json``, written last by ``infer``) is readable and lists a CSV
or Parquet table that exists. The slide image is found at the path the manifest records, or in the SLIDE the user
passes (a file, or a folder holding the slide under its original name); without it the nuclei show on a blank canvas.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..output.regular import is_regular
from ..post.classes import class_colours
from .points import MAX_CLASSES, tables_for

log = logging.getLogger(__name__)
MANIFEST_SUFFIX = ".manifest.json"


@dataclass
class SlideRun:
    """One slide's finished outputs in ``out_dir``; ``slide_path`` is None when the image cannot be found."""

    stem: str
    out_dir: Path
    manifest: dict
    tables: list[Path]  # Parquet first when it can be read, then CSV
    slide_path: Path | None

    @property
    def table(self) -> Path:
        return self.tables[0]

    @property
    def classes(self) -> tuple[str, ...]:
        """The model's classes in id order (weights adapted to other class sets bring their own)."""
        return tuple(self.manifest["fingerprint"]["model"]["classes"])  # checked by manifest_problem

    def colours(self) -> list[tuple[int, int, int]]:
        """The colours the run drew its classes in (its manifest's; the defaults for manifests without them)."""
        given = self.manifest.get("class_colours")
        ok = isinstance(given, list) and len(given) == len(self.classes)
        ok = ok and all(isinstance(c, list) and len(c) == 3 and all(_byte(v) for v in c) for c in given)
        return [tuple(c) for c in given] if ok else class_colours(self.classes)

    def output(self, suffix: str) -> Path | None:
        """``<stem>.<suffix>`` when the manifest lists it and it exists (never a path built from a request)."""
        name = f"{self.stem}.{suffix}"
        path = self.out_dir / name
        return path if name in self.manifest.get("outputs", {}) and is_regular(path) else None  # never via a link


def _read_manifest(path: Path) -> tuple[dict | None, str]:
    """The manifest, or None and why it cannot be shown."""
    if not is_regular(path):
        return None, "its manifest is a link or not a plain file"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return None, f"its manifest is unreadable ({type(exc).__name__})"
    problem = manifest_problem(data)
    return (None, f"its manifest has {problem}") if problem else (data, "")


def _byte(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 255


def _number(value, low: float = 0.0) -> bool:
    """A finite number above ``low`` (booleans are not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > low


def manifest_problem(data) -> str | None:
    """What makes ``data`` unusable as a finished run's manifest (the fields the viewer reads), or None."""
    if not isinstance(data, dict) or not isinstance(data.get("outputs"), dict):
        return "no list of outputs"
    finger = data.get("fingerprint")
    model = finger.get("model") if isinstance(finger, dict) else None
    if not isinstance(model, dict):
        return "no model in its fingerprint"
    classes = model.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c for c in classes):
        return "no list of class names (written by an older muse-fast? rerun muse-fast infer)"
    if len(classes) > MAX_CLASSES:
        return f"{len(classes)} classes; the viewer shows at most {MAX_CLASSES}"
    if any(k in model and not _number(model[k]) for k in ("tile_size", "mpp")):
        return "a model tile_size or mpp that is not a positive number"
    override = finger.get("mpp_override")
    if override is not None and not _number(override):
        return "an mpp_override that is not a positive number"
    settings = finger.get("settings", {})
    overlap = settings.get("overlap") if isinstance(settings, dict) else "bad"
    if overlap is not None and not (
        isinstance(overlap, int) and not isinstance(overlap, bool) and 0 <= overlap < model.get("tile_size", math.inf)
    ):
        return "an overlap that is not a whole number of pixels below the tile size"
    per_class = data.get("per_class", {})
    if not isinstance(per_class, dict) or not all(isinstance(v, int) and v >= 0 for v in per_class.values()):
        return "per_class counts that are not whole numbers"
    if not isinstance(data.get("nuclei", 0), int) or isinstance(data.get("nuclei"), bool):
        return "a nuclei count that is not a whole number"
    if data.get("area_mm2") is not None and not (_number(data["area_mm2"], -1e-12)):
        return "an area that is not a number"
    if not isinstance(data.get("slide", ""), str):
        return "a slide path that is not text"
    return None


def _find_slide(manifest: dict, given: Path | None) -> Path | None:
    recorded = Path(str(manifest.get("slide", "")))
    candidates = []
    if given is not None:
        candidates.append(given / recorded.name if given.is_dir() else given)
    candidates.append(recorded)
    file = manifest["fingerprint"].get("file")
    size = file.get("size") if isinstance(file, dict) else None
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
        manifest, problem = _read_manifest(path)
        tables = tables_for(out_dir, stem, manifest["outputs"]) if manifest else []
        if manifest is None or not tables:
            log.warning("%s is not shown: %s", stem, problem or "its nuclei table is missing or not a plain file")
            unfinished.append(stem)
            continue
        runs.append(SlideRun(stem, out_dir, manifest, tables, _find_slide(manifest, slide)))
    if slide is not None and slide.is_file():
        runs = [r for r in runs if Path(str(r.manifest.get("slide", ""))).name == slide.name] or runs
    if not runs:
        what = f"unreadable or incomplete manifests: {', '.join(unfinished)}" if unfinished else "no *.manifest.json"
        raise InputError(
            f"no finished run in {out_dir} ({what}); run muse-fast infer SLIDE --out {out_dir} first, or let it finish"
        )
    return runs
