"""What a slide run reports: one line per slide on the terminal, and ``run_summary.json`` for a cohort."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..output.atomic import atomic_write
from ..output.density import CELL_MM2, class_densities
from ..output.folder import output_errors


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
        name = Path(self.slide).name
        if self.status != "done":
            return f"{name}: {self.status}{': ' + self.error if self.error else ''}"
        counts = ", ".join(f"{k} {v}" for k, v in self.per_class.items())
        resumed = f", {self.resumed_batches} batches resumed" if self.resumed_batches else ""
        damaged = f", {len(self.unreadable_regions)} unreadable skipped" if self.unreadable_regions else ""
        return (
            f"{name}: {self.nuclei} nuclei ({counts}); {self.tiles} tiles (+{self.tiles_blank} blank{damaged})"
            f"{resumed}; {self.seconds:.1f} s, {self.seconds_per_mm2:.2f} s/mm^2"
        )


def write_run_summary(out_dir: Path, summaries: list[SlideSummary], config: dict, extra: dict | None = None) -> Path:
    """``OUT/run_summary.json``: every slide's summary (with ``density_per_mm2``: nuclei per mm^2 of tissue per
    class), the number failed, the run's config, and ``extra`` sections (``ray``: the cluster's workers and retries)."""
    path = Path(out_dir) / "run_summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    failed = [s for s in summaries if s.status == "failed"]
    slides = [{**asdict(s), "density_per_mm2": class_densities(s.per_class, s.area_mm2)} for s in summaries]
    payload = {"slides": slides, "failed": len(failed), "config": config, **(extra or {})}
    payload["density_grid_mm2"] = CELL_MM2  # the cell area of each slide's <stem>.density.png
    with output_errors(out_dir), atomic_write(path) as fh:
        json.dump(payload, fh, indent=2, default=str)
    return path
