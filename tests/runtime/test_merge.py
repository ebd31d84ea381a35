"""Overlap duplicates (muse_fast/post/merge.py): the vectorised ownership test and grouping against their reference
paths (one tile at a time; a union-find with one ``min`` per group), on overlapping tiles that report the same
nuclei from both sides of every boundary, with tied scores and chains of near detections."""

import numpy as np
import pytest

from muse_fast.io.tiling import tile_grid
from muse_fast.post.merge import (
    MergeConfig,
    duplicates,
    duplicates_reference,
    in_halo,
    in_own_core,
    in_own_core_reference,
)


def reported(seed: int, size: int = 900):
    """Nuclei of a ``size`` x ``size`` image as overlapping 224-px tiles report them: each tile reports the nuclei
    in its core plus margin, moved by up to 1.5 px (two tiles see a nucleus slightly apart); scores on a coarse grid,
    so ties happen; a few tight clusters make chains of pairs."""
    rng = np.random.default_rng(seed)
    tiles = tile_grid(size, size, 224, 32)
    truth = rng.uniform(0, size, (1500, 2))
    centres = rng.uniform(0, size, (30, 2))
    truth = np.concatenate([truth, (centres[:, None] + rng.normal(0, 3, (30, 5, 2))).reshape(-1, 2)])
    margin = MergeConfig().margin
    xy, ids, score = [], [], []
    for index, tile in enumerate(tiles):
        seen = truth[tile.owns(truth, margin)]
        xy.append(seen + rng.uniform(-1.5, 1.5, seen.shape))
        ids.append(np.full(len(seen), index))
        score.append(rng.integers(30, 100, len(seen)).astype(np.float32) / 100)
    return tiles, np.concatenate(ids), np.concatenate(xy), np.concatenate(score)


@pytest.mark.parametrize("seed", range(5))
def test_grouping_drops_what_the_reference_drops(seed):
    tiles, ids, xy, score = reported(seed)
    cfg = MergeConfig()
    halo = in_halo(tiles, ids, xy, cfg)
    got = duplicates(tiles, ids[halo], xy[halo], score[halo], cfg)
    want = duplicates_reference(tiles, ids[halo], xy[halo], score[halo], cfg)
    assert halo.sum() > 500 and want.sum() > 100  # real overlap: many nuclei reported twice
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("grow", [-14.0, 0.0, 8.0])
def test_the_ownership_test_matches_one_tile_at_a_time(grow):
    tiles, ids, xy, _ = reported(7)
    np.testing.assert_array_equal(in_own_core(tiles, ids, xy, grow), in_own_core_reference(tiles, ids, xy, grow))
    empty = np.zeros((0, 2))
    assert in_own_core(tiles, np.zeros(0, np.int64), empty).shape == (0,)


def test_small_and_pairless_inputs_drop_nothing():
    tiles, ids, xy, score = reported(3)
    cfg = MergeConfig()
    assert not duplicates(tiles, ids[:1], xy[:1], score[:1], cfg).any()
    one_tile = ids == ids[0]
    assert not duplicates(tiles, ids[one_tile], xy[one_tile], score[one_tile], cfg).any()  # same tile: never pairs


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_the_final_pass_drops_from_checkpoints_what_the_in_memory_merge_drops(tmp_path, seed, batch_size):
    """``overlap_duplicates`` (the final pass, batch by batch from the checkpoint shards, some batches without halo
    nuclei or without nuclei at all) keeps exactly the rows ``merge_in_memory`` keeps, in the same order."""
    from muse_fast.runtime.outputs import overlap_duplicates
    from muse_fast.runtime.predict import Nuclei, merge_in_memory
    from muse_fast.runtime.shards import ShardStore

    tiles, ids, xy, score = reported(seed)
    keep_tile = np.ones(len(tiles), bool)
    keep_tile[::7] = False  # tiles that reported nothing
    rows = keep_tile[ids]
    ids, xy, score = ids[rows], xy[rows], score[rows]
    nuclei = Nuclei(xy, score, np.zeros(len(xy), np.int64), score, ids)
    store = ShardStore(tmp_path, "slide", {"test": seed})
    n_batches = -(-len(tiles) // batch_size)
    parts = []
    for index in range(n_batches):
        part = nuclei.select((ids >= index * batch_size) & (ids < (index + 1) * batch_size))
        store.write(index, part, 0)
        parts.append(part)
    drop = overlap_duplicates(store, tiles, n_batches)
    kept = []
    for index, part in enumerate(parts):
        keep = np.ones(len(part), bool)
        keep[drop[index]] = False
        kept.append(part.select(keep))
    expected = merge_in_memory(Nuclei.concat(parts), tiles)
    assert len(expected) < len(nuclei)  # duplicates were there to drop
    np.testing.assert_array_equal(Nuclei.concat(kept).xy, expected.xy)
    np.testing.assert_array_equal(Nuclei.concat(kept).tile, expected.tile)
