"""Removing duplicates where tiles overlap.

Every tile keeps the nuclei in its *core* (cores partition the slide, see ``io.tiling``) plus a thin ``margin``
outside it. A nucleus near a core boundary can then be reported by two tiles at slightly different positions
(each tile sees other context). Detections from different tiles closer than ``dup_radius`` are one nucleus: the
detection inside its own tile's core wins, then the higher score, then the lower tile index (deterministic).
A detection outside its core with no partner is kept (the owning tile missed it), so nothing is lost at borders.

Only detections within ``margin + dup_radius`` of a core boundary can have partners (the halo strips), so only
those are ever held in memory for the resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from ..io.tiling import Tile


@dataclass(frozen=True)
class MergeConfig:
    margin: float = 8.0  # model pixels kept outside a tile's core (two tiles can disagree by a cell or more)
    dup_radius: float = 6.0  # model pixels (3 um at 0.5 um/px): closer detections from different tiles are one


def in_own_core(tiles: list[Tile], tile_ids: np.ndarray, xy: np.ndarray, grow: float = 0.0) -> np.ndarray:
    """For each detection, whether it lies in the (grown or shrunk) core of the tile that produced it."""
    if len(xy) == 0:
        return np.zeros(0, bool)
    present, row = np.unique(tile_ids, return_inverse=True)
    x0, y0, x1, y1 = np.array([tiles[t].core for t in present], np.float64)[row.reshape(-1)].T
    x, y = xy[:, 0], xy[:, 1]
    return (x >= x0 - grow) & (x < x1 + grow) & (y >= y0 - grow) & (y < y1 + grow)


def in_own_core_reference(tiles: list[Tile], tile_ids: np.ndarray, xy: np.ndarray, grow: float = 0.0) -> np.ndarray:
    """:func:`in_own_core` one tile at a time through :meth:`Tile.owns` (the reference path)."""
    out = np.zeros(len(xy), bool)
    for t in np.unique(tile_ids):
        sel = tile_ids == t
        out[sel] = tiles[t].owns(xy[sel], grow)
    return out


def in_halo(tiles: list[Tile], tile_ids: np.ndarray, xy: np.ndarray, cfg: MergeConfig) -> np.ndarray:
    """Detections that could have a partner in another tile (not deep inside their own core)."""
    return ~in_own_core(tiles, tile_ids, xy, -(cfg.margin + cfg.dup_radius))


def cross_tile_pairs(tile_ids: np.ndarray, xy: np.ndarray, cfg: MergeConfig) -> np.ndarray:
    """Index pairs ``[P, 2]`` of detections from different tiles closer than ``cfg.dup_radius``."""
    if len(xy) < 2:
        return np.zeros((0, 2), np.int64)
    pairs = cKDTree(xy).query_pairs(cfg.dup_radius, output_type="ndarray")
    return pairs[tile_ids[pairs[:, 0]] != tile_ids[pairs[:, 1]]]


def duplicates(
    tiles: list[Tile], tile_ids: np.ndarray, xy: np.ndarray, score: np.ndarray, cfg: MergeConfig
) -> np.ndarray:
    """Bool mask of the detections to drop among halo detections (model-pixel ``xy``, their tiles and scores).

    Detections linked by a pair from different tiles form groups (connected components); each group keeps one.
    Scores are finite (peaks above the detection threshold); with a NaN the choice may differ from the reference's.
    """
    drop = np.zeros(len(xy), bool)
    pairs = cross_tile_pairs(tile_ids, xy, cfg)
    if len(pairs) == 0:
        return drop
    graph = coo_matrix((np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])), shape=(len(xy), len(xy)))
    group = connected_components(graph, directed=False)[1]
    linked = np.unique(pairs)
    own = in_own_core(tiles, tile_ids[linked], xy[linked])
    # the best of a group first: inside its own core, then the higher score, the lower tile, the lower index
    order = np.lexsort((linked, tile_ids[linked], -np.asarray(score)[linked], ~own, group[linked]))
    ranked = group[linked][order]
    first = np.ones(len(order), bool)
    first[1:] = ranked[1:] != ranked[:-1]
    drop[linked[order[~first]]] = True
    return drop


def duplicates_reference(
    tiles: list[Tile], tile_ids: np.ndarray, xy: np.ndarray, score: np.ndarray, cfg: MergeConfig
) -> np.ndarray:
    """:func:`duplicates` with a union-find and one ``min`` per group in Python (the reference path)."""
    drop = np.zeros(len(xy), bool)
    pairs = cross_tile_pairs(tile_ids, xy, cfg)
    if len(pairs) == 0:
        return drop
    parent = np.arange(len(xy))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    own = in_own_core_reference(tiles, tile_ids, xy)
    members: dict[int, list[int]] = {}
    for i in np.unique(pairs):
        members.setdefault(find(int(i)), []).append(int(i))
    for group in members.values():
        best = min(group, key=lambda i: (not own[i], -float(score[i]), int(tile_ids[i]), i))
        for i in group:
            drop[i] = i != best
    return drop
