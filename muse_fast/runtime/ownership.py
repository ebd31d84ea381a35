"""Which of a slide's files in the output folder are muse-fast's: only those are written over, replaced or removed.

A file under one of the slide's output names (``<stem>.geojson``, ``.csv``, ...) is ours when the slide's manifest
lists it, or, while a run renames its outputs and until its manifest is written, when the checkpoint folder's record
names it (:func:`muse_fast.runtime.shards.recorded_outputs`). Any other file there is the user's: a run that would
write it stops before any work with one line naming it, unless ``--overwrite``; then it is replaced only by the
complete new file (a rename). The user's files under names a run does not write are left as they are, always.
Whatever the ownership, a link, folder, FIFO, socket or device node at any of these names is refused.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..config import InferConfig
from ..errors import OutputError
from ..output.atomic import partial_path
from ..output.regular import check_folder, check_regular
from ..output.writers import parquet_available
from .manifest import manifest_path, read_manifest
from .shards import recorded_outputs, shard_dir

OUTPUT_SUFFIXES = ("geojson", "csv", "parquet", "h5ad", "overlay.png", "tissue.png", "density.png", "manifest.json")
log = logging.getLogger(__name__)


def output_names(stem: str) -> list[str]:
    """Every name a slide's outputs may have, in the order they are written."""
    return [f"{stem}.{suffix}" for suffix in OUTPUT_SUFFIXES]


def planned_outputs(stem: str, cfg: InferConfig, tissue_mask: bool) -> set[str]:
    """The names a run writes for a slide (``tissue_mask``: whether it masks this slide's tissue)."""
    wanted = {"geojson", "csv", "overlay.png", "density.png", "manifest.json"}
    wanted |= {"parquet"} if parquet_available() else set()
    wanted |= {"h5ad"} if cfg.embeddings else set()
    wanted |= {"tissue.png"} if tissue_mask else set()
    return {f"{stem}.{suffix}" for suffix in wanted}


def check_slide_paths(out_dir: Path, stem: str) -> None:
    """Before any work: each of the slide's output names (and this process's temporary names for them) is a regular
    file or nothing, its checkpoint folder a folder or nothing (:class:`OutputError` otherwise; the slide's lock file
    is checked by its lock)."""
    check_folder(shard_dir(out_dir, stem), "the checkpoint folder of muse-fast")
    for name in output_names(stem):
        check_regular(Path(out_dir) / name)
        check_regular(partial_path(Path(out_dir) / name), "a temporary file of muse-fast")


def owned_outputs(out_dir: Path, stem: str) -> set[str]:
    """The slide's output names that muse-fast wrote (listed by its manifest or by a stopped run's record)."""
    names = recorded_outputs(out_dir, stem)
    manifest = read_manifest(out_dir, stem)
    if manifest is not None:
        names |= set(manifest.outputs) | {manifest_path(out_dir, stem).name}
    return names & set(output_names(stem))  # never a name outside the slide's own, whatever a record says


def claim_outputs(out_dir: Path, stem: str, planned: set[str], overwrite: bool, slide_name: str) -> set[str]:
    """Check that the run may write ``planned`` in ``out_dir`` and return the slide's names that are ours.

    A planned name held by a file that is not ours is an :class:`OutputError` naming it, or with ``overwrite`` a
    warning that it will be replaced once the new file is complete.
    """
    owned = owned_outputs(out_dir, stem)
    foreign = [n for n in output_names(stem) if n in planned and n not in owned and os.path.lexists(Path(out_dir) / n)]
    if not foreign:
        return owned
    listed = ", ".join(foreign)
    if not overwrite:
        them = "them" if len(foreign) > 1 else "it"
        raise OutputError(
            f"{listed} in {out_dir} {'were' if len(foreign) > 1 else 'was'} not written by muse-fast (no manifest of "
            f"{slide_name} lists {them}); move {them} away, pass another --out, or pass --overwrite to replace {them}"
        )
    log.warning(
        "%s: --overwrite: replacing %s, not written by muse-fast, once the new files are complete", slide_name, listed
    )
    return owned
