"""Inputs of ``muse-fast adapt``: each slide or image with its annotations, read as windows at the model's mpp.

A window is an RGB array at the model's resolution around annotated points (cells of a grid, for points scattered
over a slide) or around one complete region (its bounding box; pixels outside the polygon are painted white, so
the network sees no nuclei there). Points and rings are converted to the window's pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..config import check_mpp
from ..errors import InputError
from ..io.readers import open_slide
from ..io.resample import read_at_scale
from ..runtime.pipeline import output_stem
from .annotations import ANNOTATION_SUFFIXES, Annotations, find_annotation_file, inside, read_annotations

CELL = 1024  # model pixels per side of the grid cells that scattered points are read in
MARGIN = 48  # model pixels of context around a cell or region (the network sees past the edge)
WHITE = 255


@dataclass
class Window:
    """Pixels at the model mpp with the annotations that fall in them (model pixels of this window)."""

    image: np.ndarray  # uint8 [H, W, 3]
    xy: np.ndarray  # float64 [N, 2]
    labels: np.ndarray  # int64 [N] class ids
    group: str  # the input it comes from (cross-validation folds never split an input)
    region: np.ndarray | None = None  # the complete region's ring (model pixels), None for sparse points
    origin: tuple[float, float] = (0.0, 0.0)  # level-0 position of pixel (0, 0)
    scale: float = 1.0  # level-0 pixels per window pixel


@dataclass
class AdaptInput:
    path: Path
    annotations: Annotations
    mpp: float | None = None  # level-0 um/px, --mpp or the file's, resolved (and warned about) once by load_inputs
    windows: list[Window] = field(default_factory=list)


def pair_inputs(paths: list[Path], folder: Path) -> list[tuple[Path, Path]]:
    """Each input with its annotation file; inputs without one, or annotation files without an input, are errors."""
    if not folder.is_dir():
        raise InputError(f"--annotations {folder} is not a folder; pass the folder holding <image stem>.geojson files")
    pairs, missing = [], []
    by_stem: dict[str, Path] = {}
    names: dict[Path, tuple[str, str]] = {}
    for path in paths:
        if path.is_dir():
            raise InputError(f"input {path} is a folder; pass its images or slides, each with <stem>.geojson")
        if not path.is_file():
            raise InputError(f"input not found: {path}; check the path")
        stem = output_stem(path)  # as infer names its outputs and QuPath its exports: .ome.tif is one suffix
        other = by_stem.get(stem)
        if other is not None:  # this stem was seen before (the same path given again too)
            raise InputError(
                f"{path} is given twice; pass each input once"
                if other.resolve() == path.resolve()
                else f"{other} and {path} would share the annotations {stem}.geojson; rename one of them "
                "(with its annotation file) so that each input has its own"
            )
        by_stem[stem] = path
        names[path] = (stem, path.stem)  # QuPath's name, and the one adapt used before 2026-12-07 (A.ome.geojson)
        found = find_annotation_file(folder, names[path])
        if found is None:
            missing.append(f"{path.name} ({stem}.geojson or {stem}.csv)")
        elif any(found == f for _, f in pairs):  # A.ome.tif's old-style A.ome.geojson is also A.ome.png's
            first = next(i for i, f in pairs if f == found)
            raise InputError(
                f"{first} and {path} would share the annotations {found.name}; rename one of them (with its "
                "annotation file) so that each input has its own"
            )
        else:
            pairs.append((path, found))
    if missing:
        raise InputError(
            f"no annotations for {', '.join(missing)} in {folder}; export <stem>.geojson from QuPath (or write "
            f"<stem>.csv with x,y,class) for every input"
        )
    stems = {s for pair in names.values() for s in pair}
    orphans = sorted(
        f.name for f in folder.iterdir() if f.suffix.lower() in ANNOTATION_SUFFIXES and f.stem not in stems
    )
    if orphans:
        raise InputError(
            f"annotations without an input: {', '.join(orphans[:5])}{' ...' if len(orphans) > 5 else ''}; pass "
            "their images too, or move those files out of --annotations"
        )
    return pairs


def load_inputs(paths: list[Path], folder: Path, mpp: float | None) -> list[AdaptInput]:
    """Parse every annotation file and check it against its image (size, resolution) before any network runs."""
    check_mpp(mpp)
    out = []
    for path, ann_path in pair_inputs(paths, folder):
        ann = read_annotations(ann_path)
        if not len(ann.xy) and not ann.regions:
            raise InputError(
                f"{ann_path.name} holds no points and no regions; annotate nuclei with QuPath's points tool"
            )
        slide = open_slide(path, mpp=mpp)
        try:
            _check_resolution(slide.mpp, path)
            _check_bounds(ann, slide.level_dimensions[0], path)
        finally:
            slide.close()
        out.append(AdaptInput(path, ann, mpp=slide.mpp))
    return out


def _check_resolution(value: float | None, path: Path) -> None:
    if value is None:
        raise InputError(
            f"{path.name} does not record its resolution (mpp); pass --mpp X (0.25 at 40x, 0.5 at 20x, 1.0 at 10x)"
        )


def _check_bounds(ann: Annotations, size: tuple[int, int], path: Path) -> None:
    w, h = size
    pts = np.concatenate([ann.xy, *ann.regions]) if ann.regions else ann.xy
    bad = (pts[:, 0] < 0) | (pts[:, 1] < 0) | (pts[:, 0] > w) | (pts[:, 1] > h)
    if bad.any():
        x, y = pts[np.argmax(bad)]
        raise InputError(
            f"{ann.source.name}: {int(bad.sum())} coordinates lie outside {path.name} ({w}x{h} px), e.g. "
            f"({x:.7g}, {y:.7g}); export the annotations of this image, in level-0 pixels"
        )


def read_windows(item: AdaptInput, classes: tuple[str, ...], model_mpp: float, mpp: float | None) -> list[Window]:
    """The windows of one input at ``model_mpp``: one per complete region, one per grid cell of other points."""
    ann = item.annotations
    ids = {n: i for i, n in enumerate(classes)}
    labels = np.asarray([ids[n] for n in ann.names], np.int64)
    slide = open_slide(item.path, mpp=None if item.mpp else mpp)  # the resolution as load_inputs resolved it
    try:
        scale = model_mpp / (item.mpp or slide.mpp)  # level-0 pixels per model pixel
        w0, h0 = slide.level_dimensions[0]
        windows, in_region = [], np.zeros(len(ann.xy), bool)
        for ring in ann.regions:
            own = inside(ann.xy, ring) if len(ann.xy) else np.zeros(0, bool)
            own &= ~in_region  # a point in two overlapping regions belongs to the first
            in_region |= own
            x0, y0 = ring.min(0) / scale - MARGIN
            x1, y1 = ring.max(0) / scale + MARGIN
            win = _read(slide, x0, y0, x1, y1, scale, item.path.stem, ann.xy[own], labels[own])
            win.region = (ring - win.origin) / scale
            _paint_outside(win)
            windows.append(win)
        rest = ~in_region
        cells = np.floor(ann.xy[rest] / scale / CELL).astype(np.int64)
        for cx, cy in sorted({tuple(c) for c in cells}):
            sel = np.flatnonzero(rest)[(cells[:, 0] == cx) & (cells[:, 1] == cy)]
            x0, y0 = cx * CELL - MARGIN, cy * CELL - MARGIN
            x1 = min((cx + 1) * CELL, math.ceil(w0 / scale)) + MARGIN
            y1 = min((cy + 1) * CELL, math.ceil(h0 / scale)) + MARGIN
            windows.append(_read(slide, x0, y0, x1, y1, scale, item.path.stem, ann.xy[sel], labels[sel]))
    finally:
        slide.close()
    return windows


def _read(slide, x0: float, y0: float, x1: float, y1: float, scale: float, group: str, xy, labels) -> Window:
    """Model pixels [x0, x1) x [y0, y1) (clipped to the slide) with the level-0 points ``xy`` moved into them."""
    w0, h0 = slide.level_dimensions[0]
    x0, y0 = max(0, math.floor(x0)), max(0, math.floor(y0))
    x1, y1 = min(math.ceil(w0 / scale), math.ceil(x1)), min(math.ceil(h0 / scale), math.ceil(y1))
    side = max(x1 - x0, y1 - y0, 1)
    square = read_at_scale(slide, round(x0 * scale), round(y0 * scale), side, scale)
    image = np.ascontiguousarray(square[: y1 - y0, : x1 - x0])
    points = np.asarray(xy, np.float64) / scale - (x0, y0)
    return Window(image, points, labels, group, None, (x0 * scale, y0 * scale), scale)


def _paint_outside(win: Window) -> None:
    """Pixels outside the region's polygon become white background: the region says nothing about them."""
    h, w = win.image.shape[:2]
    mask = Image.new("L", (w, h), 0)
    ImageDraw.Draw(mask).polygon([tuple(p) for p in win.region], fill=1)
    win.image = np.where(np.asarray(mask, bool)[..., None], win.image, WHITE).astype(np.uint8)
