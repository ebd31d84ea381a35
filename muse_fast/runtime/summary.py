"""What a slide run reports: one line per slide on the terminal, and ``run_summary.json`` for a cohort."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import OutputError
from ..output.atomic import atomic_write
from ..output.density import CELL_MM2, class_densities
from ..output.folder import output_errors
from ..output.regular import check_regular, is_regular
from ..output.text import printable


@dataclass
class SlideSummary:
    slide: str
    status: str  # "done", "skipped" (outputs exist), "failed"
    nuclei: int = 0
    per_class: dict[str, int] = field(default_factory=dict)
    tiles: int = 0
    tiles_blank: int = 0
    seconds: float = 0.0
    area_mm2: float = 0.0
    seconds_per_mm2: float = 0.0
    resumed_batches: int = 0
    outputs: list[str] = field(default_factory=list)
    error: str = ""
    unreadable_regions: list[list[int]] = field(default_factory=list)  # level-0 [x, y, w, h] skipped as damaged

    def line(self) -> str:
        """One line for the terminal (control characters in slide and class names escaped)."""
        name = printable(Path(self.slide).name)
        if self.status != "done":
            return f"{name}: {self.status}{': ' + printable(self.error) if self.error else ''}"
        counts = ", ".join(f"{printable(k)} {v}" for k, v in self.per_class.items())
        resumed = f", {self.resumed_batches} batches resumed" if self.resumed_batches else ""
        damaged = f", {len(self.unreadable_regions)} unreadable skipped" if self.unreadable_regions else ""
        return (
            f"{name}: {self.nuclei} nuclei ({counts}); {self.tiles} tiles (+{self.tiles_blank} blank{damaged})"
            f"{resumed}; {self.seconds:.1f} s, {self.seconds_per_mm2:.2f} s/mm^2"
        )


SUMMARY_NAME = "run_summary.json"


def check_summary_path(out_dir: Path, overwrite: bool) -> None:
    """Before a cohort runs: ``OUT/run_summary.json`` is nothing, or a regular file that muse-fast wrote (with
    ``overwrite``: any regular file); one-line :class:`OutputError` otherwise."""
    path = Path(out_dir) / SUMMARY_NAME
    check_regular(path, "the run summary of muse-fast")
    if overwrite or not is_regular(path):
        return
    try:
        data = json.loads(path.read_text())
        ours = isinstance(data, dict) and isinstance(data.get("slides"), list) and "config" in data
    except (OSError, ValueError):
        ours = False
    if not ours:
        raise OutputError(
            f"{SUMMARY_NAME} in {out_dir} was not written by muse-fast; move it away, pass another --out, or pass "
            f"--overwrite to replace it"
        )


def write_run_summary(out_dir: Path, summaries: list[SlideSummary], config: dict, extra: dict | None = None) -> Path:
    """``OUT/run_summary.json``: every slide's summary (with ``density_per_mm2``: nuclei per mm^2 of tissue per
    class), the number failed, the run's config, and ``extra`` sections (``ray``: the cluster's workers and retries)."""
    path = Path(out_dir) / SUMMARY_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    failed = [s for s in summaries if s.status == "failed"]
    slides = [{**asdict(s), "density_per_mm2": class_densities(s.per_class, s.area_mm2)} for s in summaries]
    payload = {"slides": slides, "failed": len(failed), "config": config, **(extra or {})}
    payload["density_grid_mm2"] = CELL_MM2  # the cell area of each slide's <stem>.density.png
    with output_errors(out_dir), atomic_write(path) as fh:
        json.dump(payload, fh, indent=2, default=str)
    return path
