"""A cohort: its slides (files; folders: their supported files, sorted; CSV lists: ``path[,mpp]``), one slide run and
recorded (locally or on a Ray worker, the same way), and ``run_summary.json``."""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from pathlib import Path

from ..config import InferConfig, valid_mpp
from ..errors import InputError, MuseError
from ..io.readers import SUPPORTED_SUFFIXES
from .summary import SlideSummary, write_run_summary


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
        slide = Path(row["path"]).expanduser()
        slide = slide if slide.is_absolute() else path.parent / slide
        mpp_text = (row.get("mpp") or "").strip()
        try:
            mpp = float(mpp_text) if mpp_text else None
        except ValueError:
            mpp = float("nan")
        if mpp is not None and not valid_mpp(mpp):
            raise InputError(
                f"{path.name} line {i}: mpp '{mpp_text}' is not a positive number of microns per pixel "
                f"(e.g. 0.25 at 40x, 0.5 at 20x); fix it or leave it empty to use the file's"
            )
        jobs.append(SlideJob(slide, mpp))
    return jobs


def collect_jobs(inputs: list[Path]) -> list[SlideJob]:
    """Expand folders and CSV lists; missing paths stay in the list (they fail, and are reported, per slide)."""
    jobs: list[SlideJob] = []
    for item in inputs:
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if _is_slide(p))
            if not found:
                raise InputError(f"folder {item} holds no slides ({' '.join(SUPPORTED_SUFFIXES)})")
            jobs.extend(SlideJob(p) for p in found)
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
    print(f"{len(summaries) - failed}/{len(summaries)} slides done; summary: {path}", file=sys.stderr)
    return 2 if failed else 0
