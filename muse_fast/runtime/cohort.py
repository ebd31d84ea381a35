"""Collect the slides of a run: files, folders (their supported files, sorted) and CSV lists (``path[,mpp]``)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from ..config import valid_mpp
from ..errors import InputError
from ..io.readers import SUPPORTED_SUFFIXES


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
