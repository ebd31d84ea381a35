"""What the viewer knows about one slide run, loaded on first use: tiles, nuclei, density grid and the page's info."""

from __future__ import annotations

import functools
import logging
import math
import threading

import numpy as np
from PIL import Image

from ..io.tiling import axis_starts
from ..io.tissue import TissueMask
from ..output.density import CELL_MM2, DensityGrid, cell_side_px, class_densities
from ..runtime.bounds import grid_size, max_tiles
from .points import PointTable
from .runs import SlideRun
from .tiles import TILE, DeepZoom

log = logging.getLogger(__name__)
MAX_DENSITY_CELLS = 1_000_000  # a 100,000 x 100,000-px slide at 0.25 um/px has about 6,000


class SlideState:
    """Lazily opened slide (``DeepZoom``), nuclei (``PointTable``) and density grid of one :class:`SlideRun`."""

    def __init__(self, run: SlideRun) -> None:
        self.run = run
        self._lock = threading.Lock()  # nuclei and density
        self._zoom_lock = threading.Lock()  # the slide: tiles are not held up while the nuclei load
        self._zoom: DeepZoom | None = None
        self._points: PointTable | None = None
        self._density: DensityGrid | None = None

    @property
    def zoom(self) -> DeepZoom | None:
        if self.run.slide_path is None:
            return None
        with self._zoom_lock:
            if self._zoom is None:
                self._zoom = DeepZoom(self.run.slide_path)
            return self._zoom

    @property
    def points(self) -> PointTable:
        with self._lock:
            if self._points is None:
                self._points = PointTable.load_first(self.run.tables, len(self.run.classes))
            return self._points

    def mpp(self) -> float | None:
        """Level-0 microns per pixel as the run used them (its ``--mpp``, else the slide's own)."""
        override = self.run.manifest.get("fingerprint", {}).get("mpp_override")
        if override:
            return float(override)
        zoom = self.zoom
        return zoom.slide.mpp if zoom is not None else None

    def size(self) -> tuple[int, int]:
        zoom = self.zoom
        if zoom is not None:
            return zoom.width, zoom.height
        pts = self.points  # no image: the extent of the nuclei
        return (int(pts.x.max()) + 1, int(pts.y.max()) + 1) if len(pts) else (1, 1)

    def density(self) -> DensityGrid | None:
        mpp = self.mpp()
        if mpp is None:
            return None
        with self._lock:
            density = self._density
        if density is None:
            width, height = self.size()
            side = cell_side_px(mpp, CELL_MM2)
            if math.ceil(width / side) * math.ceil(height / side) > MAX_DENSITY_CELLS:  # an mpp no run could have
                return None
            pts = self.points
            density = DensityGrid.empty(width, height, len(self.run.classes), mpp, CELL_MM2)
            density.add(np.stack([pts.x, pts.y], 1), pts.class_id)
            with self._lock:
                self._density = density
        return density

    @functools.cached_property
    def tile_grid(self) -> dict | None:
        """The tiles the run planned, as level-0 origins and side, from the manifest's settings: the whole grid, or with
        a tissue mask the tiles that touch tissue (as ``pipeline.plan_tiles`` chooses them, from the mask's PNG)."""
        finger = self.run.manifest.get("fingerprint", {})
        model, overlap, mpp = finger.get("model", {}), finger.get("settings", {}).get("overlap"), self.mpp()
        if not model.get("tile_size") or not model.get("mpp") or overlap is None or mpp is None:
            return None
        scale = model["mpp"] / mpp
        size = int(model["tile_size"])
        w, h = self.size()
        if grid_size(math.ceil(w / scale), math.ceil(h / scale), size, int(overlap)) > max_tiles():
            return None  # more tiles than infer plans for a slide: the manifest's mpp is not the run's
        xs = np.array(axis_starts(math.ceil(w / scale), size, int(overlap))) * scale
        ys = np.array(axis_starts(math.ceil(h / scale), size, int(overlap))) * scale
        x, y = (a.ravel() for a in np.meshgrid(xs, ys))
        side = size * scale
        mask = self.tissue_mask
        if mask is not None:
            tissue = TissueMask(mask, w / mask.shape[1])  # the downsample io.tissue.detect_tissue sets
            ok = [tissue.fraction_in(x0, y0, x0 + side, y0 + side) > 0 for x0, y0 in zip(x, y)]
            x, y = x[ok], y[ok]
        return {"side": side, "tiles": [[round(float(a), 1), round(float(b), 1)] for a, b in zip(x, y)]}

    @functools.cached_property
    def tissue_mask(self) -> np.ndarray | None:
        """The run's tissue mask (True: tissue), or None when it has none or its PNG cannot be read (then said once)."""
        path = self.run.output("tissue.png")
        if path is None:
            return None
        try:
            with Image.open(path) as image:
                return np.asarray(image.convert("L")) > 127
        except (OSError, ValueError) as exc:  # PIL's UnidentifiedImageError is an OSError
            log.warning("%s: its tissue mask cannot be read (%s); the tissue layer is off", self.run.stem, exc)
            return None

    def info(self) -> dict:
        """Everything the page needs before it draws: size, levels, classes with counts and densities, layers."""
        manifest, run = self.run.manifest, self.run
        width, height = self.size()
        zoom = self.zoom
        area = float(manifest.get("area_mm2") or 0.0)
        per_class = {name: int(manifest.get("per_class", {}).get(name, 0)) for name in run.classes}
        density = class_densities(per_class, area)
        classes = [
            {"id": i, "name": name, "colour": list(colour), "count": per_class[name], "per_mm2": density[name]}
            for i, (name, colour) in enumerate(zip(run.classes, run.colours()))
        ]
        return {
            "stem": run.stem,
            "slide": run.slide_path.name if run.slide_path else None,
            "slide_recorded": str(manifest.get("slide", "")),
            "width": width,
            "height": height,
            "mpp": self.mpp(),
            "top_level": zoom.top if zoom else None,
            "tile": TILE,
            "nuclei": int(manifest.get("nuclei", 0)),
            "area_mm2": area,
            "classes": classes,
            "unreadable_regions": manifest.get("unreadable_regions", []),
            "tile_grid": self.tile_grid,
            "tissue": self.tissue_mask is not None,
            "density_cell_mm2": CELL_MM2 if self.mpp() else None,
        }

    def close(self) -> None:
        if self._zoom is not None:
            self._zoom.close()
