"""Limits that keep a run within the machine: reader threads, the size of a slide's tile plan, output name lengths.

Each is checked before any work, and says the number and the fix in one line.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

from ..errors import InputError

log = logging.getLogger(__name__)

MAX_WORKERS = 64  # reader threads; more only contend for the disk and the GIL (cuCIM stalled at 32k threads)
WORKERS_PER_CPU = 4
MAX_TILES = 5_000_000  # ~10x the tiles of the largest whole slide at 0.25 um/px; more means a wrong resolution
TILE_PLAN_BYTES = 1024  # memory a planned tile takes (the grid, its core, batch lists; measured ~180 B for the grid)
PLAN_MEMORY_SHARE = 0.25  # a plan may take at most this share of the RAM
NAME_MAX = 255  # bytes in a file name on every common file system
LONGEST_EXTRA = len(".{stem}.manifest.json.4194304.partial") - len("{stem}")  # our longest name around a stem


def cap_workers(requested: int, cpus: int | None = None) -> int:
    """``requested`` reader threads, capped at ``min(4 x usable CPUs, 64)`` with one warning."""
    cpus = cpus or usable_cpus()
    most = min(WORKERS_PER_CPU * cpus, MAX_WORKERS)
    if requested <= most:
        return requested
    log.warning(
        "--workers %d is more reader threads than this machine can use; using %d (%d per CPU, at most %d)",
        requested,
        most,
        WORKERS_PER_CPU,
        MAX_WORKERS,
    )
    return most


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a container's share), else all of the machine's."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def grid_size(width: int, height: int, tile: int, overlap: int) -> int:
    """Tiles :func:`muse_fast.io.tiling.tile_grid` makes for a ``width x height`` image, without making them."""
    per_axis = [1 if n <= tile else math.ceil((n - tile) / (tile - overlap)) + 1 for n in (width, height)]
    return per_axis[0] * per_axis[1]


def max_tiles(ram_bytes: int | None = None) -> int:
    """The most tiles a slide's plan may hold: :data:`MAX_TILES`, fewer when the RAM is small."""
    if ram_bytes is None:
        from .budget import memory_bytes

        ram_bytes = memory_bytes("cpu")
    return min(MAX_TILES, int(PLAN_MEMORY_SHARE * ram_bytes // TILE_PLAN_BYTES))


def check_tile_plan(tiles: int, name: str, slide_mpp: float, model_mpp: float, ram_bytes: int | None = None) -> None:
    """Refuse a plan of more than :func:`max_tiles` tiles (a wrong ``--mpp`` or weights mpp) before it is made."""
    most = max_tiles(ram_bytes)
    if tiles <= most:
        return
    raise InputError(
        f"{name} at {slide_mpp:g} um/px, resampled to the model's {model_mpp:g} um/px, needs {tiles:,} tiles, more "
        f"than a slide can need (at most {most:,} here); check --mpp (0.25 at 40x, 0.5 at 20x), the file's "
        f"resolution and the weights' mpp"
    )


def check_name_length(stem: str, slide: Path, out_dir: Path) -> None:
    """Refuse a slide whose output names (``<stem>.manifest.json`` and their temporary names) would be too long."""
    longest = len(os.fsencode(stem)) + LONGEST_EXTRA
    limit = _name_max(out_dir)
    if longest > limit:
        raise InputError(
            f"the slide name {slide.name[:40]}... is too long for its output names ({longest} bytes with "
            f"'.manifest.json' and a temporary suffix; the file system allows {limit}); rename the slide or link it "
            f"under a name of at most {limit - LONGEST_EXTRA} bytes before its suffix"
        )


def _name_max(folder: Path) -> int:
    """NAME_MAX of the file system holding ``folder`` (or its nearest existing parent)."""
    folder = Path(os.path.abspath(folder))
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return min(NAME_MAX, os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return NAME_MAX
