"""The base network on the windows: detected nuclei with their point features, matched to annotated points.

The network pass runs on any engine of :mod:`muse_fast.runtime.engines` (``adapt`` builds the fastest one the
machine has, as ``infer`` does). :func:`detect_windows` packs the tiles of all windows into full batches (many
annotated areas are smaller than one batch of tiles); :func:`detect` is the reference, one window at a time on
the torch engine at fp32, and gives the same nuclei as :func:`detect_windows` on that engine.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..io.tiling import tile_grid
from ..model.registry import DenseOutputs
from ..post.decode import DecodeConfig
from ..runtime.engines import Engine, TorchEngine
from ..runtime.predict import Nuclei, crop_tile, merge_in_memory, nuclei_from_dense, predict_image
from ..train.metrics import hungarian_match
from .inputs import Window

MATCH_UM = 3.0  # an annotated point and a detected nucleus are one nucleus within 3 um (train.evaluate's radius)
OVERLAP = 32
BATCH = 16


@dataclass
class PointFeatures:
    """Point features of the detected nuclei matched to annotated points, with the annotated class."""

    feats: torch.Tensor  # float32 [N, D]
    labels: np.ndarray  # int64 [N]
    groups: np.ndarray  # int64 [N] index of the input each point comes from
    unmatched: int  # annotated points with no detected nucleus within MATCH_UM


def detect(model, window: Window, tile_size: int, decode: DecodeConfig = DecodeConfig(), batch: int = BATCH) -> Nuclei:
    """Nuclei of one window (its pixels), with point features, on the torch engine at fp32 (the reference)."""
    engine = TorchEngine(model, "cpu", "fp32")
    return predict_image(engine, window.image, tile_size, OVERLAP, decode, batch, features=True)


def detect_windows(
    engine: Engine, images: list[np.ndarray], tile_size: int, decode: DecodeConfig = DecodeConfig(), batch: int = BATCH
) -> Iterator[Nuclei]:
    """Nuclei of each image in turn (its pixels, with point features): tiles of consecutive images share batches."""
    grids = [tile_grid(im.shape[1], im.shape[0], tile_size, OVERLAP) for im in images]
    queue = [(i, j) for i, grid in enumerate(grids) for j in range(len(grid))]
    parts: list[list[Nuclei]] = [[] for _ in images]
    done = 0
    for start in range(0, len(queue), batch):
        chunk = queue[start : start + batch]
        dense = engine.run(np.stack([crop_tile(images[i], grids[i][j], tile_size) for i, j in chunk]))
        lo = 0
        while lo < len(chunk):  # one decode per image in the batch, in that image's tile numbering
            i = chunk[lo][0]
            hi = lo + sum(1 for k, _ in chunk[lo:] if k == i)
            ids = [j for _, j in chunk[lo:hi]]
            part = DenseOutputs(dense.centre[lo:hi], dense.fmap[lo:hi])
            hw = (tile_size, tile_size)
            parts[i].append(nuclei_from_dense(engine, part, [grids[i][j] for j in ids], ids, hw, decode, features=True))
            lo = hi
        last = chunk[-1][0] if start + batch >= len(queue) else queue[start + batch][0] - 1
        while done <= last:  # every tile of these images has run
            yield merge_in_memory(Nuclei.concat(parts[done]), grids[done])
            parts[done] = []
            done += 1
    while done < len(images):  # images with no tiles
        yield Nuclei.empty()
        done += 1


def matched_features(
    engine: Engine, windows: list[Window], groups: list[str], tile_size: int, mpp: float, progress: bool = False
) -> PointFeatures:
    """Features of the detected nuclei nearest each annotated point (one-to-one, within :data:`MATCH_UM`)."""
    from tqdm import tqdm

    feats, labels, group_ids, unmatched = [], [], [], 0
    radius = MATCH_UM / mpp
    used = [w for w in windows if len(w.xy)]
    found = detect_windows(engine, [w.image for w in used], tile_size)
    for win, nuc in tqdm(
        zip(used, found), total=len(used), desc="detecting", unit="area", disable=not progress, file=sys.stderr
    ):
        pairs = hungarian_match(win.xy, nuc.xy, radius)
        unmatched += len(win.xy) - len(pairs)
        if pairs:
            g, p = np.asarray(pairs).T
            feats.append(torch.from_numpy(nuc.feat[p]))
            labels.append(win.labels[g])
            group_ids.append(np.full(len(g), groups.index(win.group), np.int64))
    if not feats:
        empty = np.zeros(0, np.int64)
        return PointFeatures(torch.zeros(0, engine.classifier.mlp[0].normalized_shape[0]), empty, empty, unmatched)
    return PointFeatures(torch.cat(feats), np.concatenate(labels), np.concatenate(group_ids), unmatched)
