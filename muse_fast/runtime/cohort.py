"""A cohort: its slides (files; folders: their supported files, sorted; CSV lists: ``path[,mpp]``), one slide run and
recorded (locally or on a Ray worker, the same way), and ``run_summary.json``.

A folder's slides never include muse-fast's own outputs (``*.overlay.png``, ``*.tissue.png``, ``*.density.png``, and
any file a manifest in the folder lists), so ``--out`` may be the input folder, run after run.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from ..config import MIN_MPP, InferConfig, implausible_mpp, valid_mpp
from ..errors import InputError, MuseError
from ..io.readers import SUPPORTED_SUFFIXES
from ..output.regular import is_regular
from ..output.text import printable
from .summary import SlideSummary, write_run_summary

OWN_IMAGE_SUFFIXES = (".overlay.png", ".tissue.png", ".density.png")  # images muse-fast writes beside its tables
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SlideJob:
    path: Path
    mpp: float | None = None  # per-slide override (CSV column ``mpp``)


def _is_slide(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and not name.startswith(".") and any(name.endswith(s) for s in SUPPORTED_SUFFIXES)


def read_slide_list(path: Path) -> list[SlideJob]:
    """A UTF-8 CSV (with or without a byte-order mark) with a ``path`` column (relative paths are relative to the CSV)
    and an optional ``mpp`` column."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except UnicodeDecodeError as exc:
        raise InputError(f"{path.name} is not UTF-8 text (byte {exc.start}); save the list as CSV UTF-8") from None
    if not rows or "path" not in rows[0]:
        raise InputError(
            f"{path.name} must be a CSV with a 'path' column (and optionally 'mpp'); got "
            f"{list(rows[0]) if rows else 'no rows'}"
        )
    jobs = []
    for i, row in enumerate(rows, start=2):
        if not (row["path"] or "").strip():
            raise InputError(
                f"{path.name} line {i} has no path (a row shorter than the header, or an empty cell); give every "
                f"row a path or remove it"
            )
        slide = Path(row["path"]).expanduser()
        slide = slide if slide.is_absolute() else path.parent / slide
        mpp_text = (row.get("mpp") or "").strip()
        try:
            mpp = float(mpp_text) if mpp_text else None
        except ValueError:
            mpp = float("nan")
        if mpp is not None and valid_mpp(mpp) and mpp < MIN_MPP:
            raise InputError(
                f"{path.name} line {i}: {implausible_mpp('mpp', mpp)}, or leave it empty to use the file's"
            )
        if mpp is not None and not valid_mpp(mpp):
            raise InputError(
                f"{path.name} line {i}: mpp '{mpp_text}' is not a positive number of microns per pixel "
                f"(e.g. 0.25 at 40x, 0.5 at 20x); fix it or leave it empty to use the file's"
            )
        jobs.append(SlideJob(slide, mpp))
    return jobs


def listed_outputs(folder: Path) -> set[str]:
    """The names that the muse-fast manifests (``*.manifest.json``) in ``folder`` list as outputs."""
    names: set[str] = set()
    for manifest in folder.glob("*.manifest.json"):
        try:
            data = json.loads(manifest.read_text()) if is_regular(manifest) else None
        except (OSError, ValueError):
            continue
        outputs = data.get("outputs") if isinstance(data, dict) else None
        names |= {n for n in outputs if isinstance(n, str)} if isinstance(outputs, dict) else set()
    return names


def folder_slides(folder: Path) -> list[Path]:
    """The slides in ``folder``, sorted: its supported files, less muse-fast's own outputs (one line names those)."""
    found = sorted(p for p in folder.iterdir() if _is_slide(p))
    listed = listed_outputs(folder) if found else set()
    ours = [p for p in found if p.name in listed or p.name.lower().endswith(OWN_IMAGE_SUFFIXES)]
    if ours:
        names = ", ".join(p.name for p in ours[:3]) + (", ..." if len(ours) > 3 else "")
        log.info("%s: not taking %d files that muse-fast wrote for slides (%s)", folder, len(ours), names)
    slides = [p for p in found if p not in ours]
    if not slides:
        mine = f"; the {len(ours)} images there are muse-fast's outputs" if ours else ""
        raise InputError(f"folder {folder} holds no slides ({' '.join(SUPPORTED_SUFFIXES)}){mine}")
    return slides


def collect_jobs(inputs: list[Path]) -> list[SlideJob]:
    """Expand folders and CSV lists; missing paths stay in the list (they fail, and are reported, per slide)."""
    jobs: list[SlideJob] = []
    for item in inputs:
        if item.is_dir():
            jobs.extend(SlideJob(p) for p in folder_slides(item))
        elif item.suffix.lower() == ".csv" and item.is_file():
            jobs.extend(read_slide_list(item))
        else:
            jobs.append(SlideJob(item))
    return jobs


def failed_summary(job: SlideJob, exc: BaseException) -> SlideSummary:
    """How a slide that raised is recorded in ``run_summary.json``: the error's first line."""
    message = str(exc) if isinstance(exc, MuseError) else f"{type(exc).__name__}: {exc}"
    return SlideSummary(str(job.path), "failed", error=message.splitlines()[0] if message else "")


def run_job(job: SlideJob, engine, meta, cfg: InferConfig, fingerprint: dict, single: bool = False) -> SlideSummary:
    """One slide of a cohort: its summary, or a failed one (a lone slide's error is raised, as are interrupts)."""
    from .pipeline import run_slide

    try:
        return run_slide(job.path, engine, meta, cfg, fingerprint, job.mpp)
    except Exception as exc:  # noqa: BLE001 - in a cohort one bad slide must not stop the others
        if single:
            raise
        return failed_summary(job, exc)


def engine_fingerprint(engine, sha: str) -> dict:
    """What a run's engine adds to every slide's fingerprint (run_slide adds the file's identity and the settings)."""
    from .fingerprint import precision_fingerprint

    return {"weights": sha, "engine": engine.name, **precision_fingerprint(engine)}


def run_config(fingerprint: dict, cfg: InferConfig) -> dict:
    """The ``config`` of ``run_summary.json``: weights, engine and the settings that change nuclei."""
    from .fingerprint import settings_fingerprint

    return {**fingerprint, **settings_fingerprint(cfg), "batch_size": cfg.batch_size, "engine": cfg.engine}


def finish_cohort(cfg: InferConfig, summaries: list[SlideSummary], fingerprint: dict, extra: dict | None = None) -> int:
    """Write ``run_summary.json`` (slides in input order), say how many are done, and return the exit code."""
    path = write_run_summary(cfg.out_dir, summaries, run_config(fingerprint, cfg), extra)
    failed = sum(s.status == "failed" for s in summaries)
    print(f"{len(summaries) - failed}/{len(summaries)} slides done; summary: {printable(str(path))}", file=sys.stderr)
    return 2 if failed else 0
