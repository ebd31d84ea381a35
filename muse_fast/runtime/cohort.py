"""A cohort: its slides (files; folders: their supported files, sorted; CSV lists: ``path[,mpp]``), one slide run and
recorded (locally or on a Ray worker, the same way), and ``run_summary.json``.

A folder's slides never include muse-fast's own outputs (any file a manifest in the folder lists, and
``*.overlay.png``, ``*.tissue.png``, ``*.density.png`` beside their slide's table), so ``--out`` may be the input
folder, run after run; nor do slides named one by one, and no slide's output may be another input of the run.
"""

from __future__ import annotations

import csv
import json
import logging
import os
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


def _slide_named(path: Path) -> bool:
    name = path.name.lower()
    return not name.startswith(".") and any(name.endswith(s) for s in SUPPORTED_SUFFIXES)


def _is_slide(path: Path) -> bool:
    return _slide_named(path) and path.is_file()


def read_slide_list(path: Path) -> list[SlideJob]:
    """A UTF-8 CSV (with or without a byte-order mark) with a ``path`` column (relative paths are relative to the CSV)
    and an optional ``mpp`` column."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames:  # 'path, mpp' and 'Path,MPP' as spreadsheets write them
                reader.fieldnames = [(name or "").strip().lower() for name in reader.fieldnames]
                twice = sorted({n for n in reader.fieldnames if n and reader.fieldnames.count(n) > 1})
                if twice:
                    raise InputError(f"{path.name} has the column {twice[0]!r} twice; keep one")
            rows = list(reader)
    except UnicodeDecodeError as exc:
        raise InputError(f"{path.name} is not UTF-8 text (byte {exc.start}); save the list as CSV UTF-8") from None
    unknown = [repr(name) for name in (rows[0] if rows else {}) if name and name not in ("path", "mpp")]
    if unknown and "path" in rows[0]:
        log.warning("%s: ignoring the columns %s (only path and mpp are read)", path.name, ", ".join(unknown))
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


def written_by_us(path: Path, listed: set[str]) -> bool:
    """Whether ``path`` is one of muse-fast's outputs: a manifest in its folder lists it, or it has an output image's
    suffix and either says so itself (the PNG's Software text) or lies beside its slide's table or manifest (images
    of versions before the text). A user's ``b.tissue.png`` is not."""
    if path.name in listed:
        return True
    name = path.name.lower()
    suffix = next((s for s in OWN_IMAGE_SUFFIXES if name.endswith(s)), None)
    if suffix is None:
        return False
    from .outputs import png_is_ours

    stem = path.name[: -len(suffix)]
    return any((path.parent / f"{stem}.{kind}").exists() for kind in ("csv", "manifest.json")) or png_is_ours(path)


def _names(paths: list[Path]) -> str:
    return ", ".join(printable(p.name) for p in paths[:3]) + (", ..." if len(paths) > 3 else "")


def folder_slides(folder: Path) -> list[Path]:
    """The slides in ``folder``, sorted: its supported files, less muse-fast's own outputs (one line names those, and
    one the entries with a slide's name that are no readable file: broken links, folders, FIFOs)."""
    named = sorted(p for p in folder.iterdir() if _slide_named(p))
    found = [p for p in named if p.is_file() and is_regular(p.resolve())]
    taken = set(found)
    odd = [p for p in named if p not in taken]
    if odd:
        log.warning("%s: not taking %d entries that are not readable files (%s)", folder, len(odd), _names(odd))
    listed = listed_outputs(folder) if found else set()
    ours = [p for p in found if written_by_us(p, listed)]
    if ours:
        log.info("%s: not taking %d files that muse-fast wrote for slides (%s)", folder, len(ours), _names(ours))
    own = set(ours)
    slides = [p for p in found if p not in own]
    if not slides:
        mine = f"; the {len(ours)} images there are muse-fast's outputs" if ours else ""
        raise InputError(f"folder {folder} holds no slides ({' '.join(SUPPORTED_SUFFIXES)}){mine}")
    return slides


def collect_jobs(inputs: list[Path]) -> list[SlideJob]:
    """Expand folders and CSV lists; missing paths stay in the list (they fail, and are reported, per slide). A file
    named on the command line that muse-fast wrote (an overlay, a density map: :func:`written_by_us`) is left out
    with one line, as in a folder; a CSV of muse-fast's is named as such."""
    jobs: list[SlideJob] = []
    ours: list[Path] = []
    listed: dict[Path, set[str]] = {}  # per folder: its manifests are read once, however many files it gives

    def ours_in(item: Path) -> bool:
        if item.parent not in listed:
            listed[item.parent] = listed_outputs(item.parent)
        return written_by_us(item, listed[item.parent])

    for item in inputs:
        if item.is_dir():
            jobs.extend(SlideJob(p) for p in folder_slides(item))
        elif item.suffix.lower() == ".csv" and item.is_file():
            if ours_in(item):
                raise InputError(
                    f"{item.name} is a nuclei table that muse-fast wrote, not a list of slides; pass the slides"
                )
            jobs.extend(read_slide_list(item))
        elif item.is_file() and ours_in(item):
            ours.append(item)
        else:
            jobs.append(SlideJob(item))
    if ours:
        log.warning("not taking %d files that muse-fast wrote for slides (%s)", len(ours), _names(ours))
    if not jobs:
        raise InputError(f"no slides to run: {_names(ours)} are muse-fast's outputs; pass the slides themselves")
    return jobs


def check_inputs_not_outputs(jobs: list[SlideJob], out_dir: Path, stems: list[str]) -> None:
    """Refuse a run in which one slide's output name is another input (``a.png`` and the user's ``a.overlay.png``
    into the same folder): even with --overwrite, an input of the run is never written over."""
    from .ownership import output_names

    by_path = {os.path.abspath(j.path): j.path for j in jobs}
    by_file = {}  # (device, inode) of each input that exists: one stat each, not one per pair
    for job in jobs:
        try:
            st = os.stat(job.path)
        except OSError:
            continue
        by_file[(st.st_dev, st.st_ino)] = job.path
    for job, stem in zip(jobs, stems):
        for name in output_names(stem):
            clash = by_path.get(os.path.abspath(out_dir / name))
            if clash is None:
                try:
                    st = os.stat(out_dir / name)
                except OSError:  # nothing there yet (a fresh run): nothing to clash with
                    continue
                clash = by_file.get((st.st_dev, st.st_ino))
            if clash is not None:
                raise InputError(
                    f"{printable(clash.name)} is an input of this run and the name of an output of "
                    f"{printable(job.path.name)}; run them into another --out, or rename one"
                )


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


def retry_busy(summaries: list[SlideSummary]) -> list[int]:
    """Which slides of a cohort failed only because another muse-fast run held them: worth one more look at the end
    (that run may have finished them, and then they count as done, not failed, in ``run_summary.json``)."""
    from .lock import BUSY

    return [i for i, s in enumerate(summaries) if s.status == "failed" and BUSY in s.error]


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
