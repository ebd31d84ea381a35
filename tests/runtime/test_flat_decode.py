"""The CPU decode in flat rows keeps what the tile-by-tile reference keeps, in the same order, bit for bit."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from muse_fast.io.tiling import tile_grid
from muse_fast.kernels.nuclei_decode import positions
from muse_fast.kernels.peaks import find_peaks
from muse_fast.kernels.point_gather import gather_points
from muse_fast.model.registry import DenseOutputs
from muse_fast.model.weights import load_weights
from muse_fast.post.decode import DecodeConfig, TileNuclei, decode_batch
from muse_fast.post.merge import MergeConfig
from muse_fast.runtime.engines import TorchEngine
from muse_fast.runtime.predict import Nuclei, nuclei_from_dense, nuclei_per_tile


@pytest.fixture(scope="module")
def model():
    return load_weights()[0].eval()


def _dense(batch: int, dim: int, seed: int, empty=(0,)) -> DenseOutputs:
    """Sharp peaks everywhere in the tiles (so some fall outside each core), none in the tiles ``empty``."""
    g = torch.Generator().manual_seed(seed)
    logit = torch.full((batch, 56, 56), -6.0)
    for i in range(batch):
        if i in empty:
            continue
        n = int(torch.randint(1, 120, (1,), generator=g))
        rows, cols = torch.randint(0, 56, (2, n), generator=g)
        logit[i, rows, cols] = torch.rand(n, generator=g) * 6 - 1
    offsets = torch.rand(batch, 2, 56, 56, generator=g) * 1.2 - 0.1
    return DenseOutputs(torch.cat([logit[:, None], offsets], dim=1), torch.randn(batch, dim, 56, 56, generator=g))


def _decode_per_tile(centre, fmap, classify, cfg=DecodeConfig()):
    """The decode as it was before the flat rows (commit 2d5f6ae), written here on its own so that the reference does
    not share decode_flat: the padded [B, k] layout, rows classified where valid, then cut tile by tile."""
    peaks = find_peaks(torch.sigmoid(centre[:, 0].float()), cfg.threshold, cfg.min_distance, cfg.max_points)
    b, k = peaks.scores.shape[0], int(peaks.counts.max())
    valid = torch.arange(k)[None, :] < peaks.counts[:, None]
    xy = positions(peaks.yx[:, :k], centre[:, 1:3], 4)
    feats = gather_points(fmap, xy, (224, 224), peaks.counts, out_dtype=torch.float32)
    probs = torch.softmax(classify(feats[valid]).float(), dim=-1)
    class_prob, class_id = torch.zeros(b, k), torch.zeros(b, k, dtype=torch.long)
    class_prob[valid], class_id[valid] = probs.max(dim=-1)
    return [
        TileNuclei(xy[i, :n], peaks.scores[i, :n].float(), class_id[i, :n], class_prob[i, :n], feats[i, :n])
        for i, n in enumerate(peaks.counts.tolist())
    ]


def _reference(engine, dense, tiles, ids, features, merge=MergeConfig()):
    per_tile = _decode_per_tile(dense.centre, dense.fmap, engine.classify)
    return nuclei_per_tile(per_tile, tiles, ids, merge, features)


@pytest.mark.parametrize("seed", [0, 1])
def test_decode_batch_cuts_the_flat_rows_as_the_padded_layout_did(model, seed):
    classify = TorchEngine(model).classify
    dense = _dense(6, 256, seed, empty=(2,))
    expected = _decode_per_tile(dense.centre, dense.fmap, classify)
    got = decode_batch(dense.centre, dense.fmap, classify, (224, 224), 4, DecodeConfig())
    assert len(got) == len(expected) == 6 and len(got[2].xy) == 0
    for e, g in zip(expected, got):
        for field in TileNuclei._fields:
            assert torch.equal(getattr(e, field), getattr(g, field)), field


def _assert_identical(expected: Nuclei, got: Nuclei) -> None:
    for field in Nuclei.FIELDS:
        e, g = getattr(expected, field), getattr(got, field)
        assert (e is None) == (g is None), field
        if e is not None:
            assert e.dtype == g.dtype and e.shape == g.shape, field
            assert np.array_equal(e, g), field


@pytest.mark.parametrize("features", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_flat_rows_equal_the_tile_by_tile_reference(model, features, seed):
    engine = SimpleNamespace(classify=TorchEngine(model).classify)
    grid = tile_grid(700, 500, 224, 32)  # inner tiles have cores on every side, edge tiles reach infinity
    order = np.random.default_rng(seed).permutation(len(grid))[:9]
    tiles, ids = [grid[i] for i in order], [int(i) + 100 for i in order]
    dense = _dense(len(tiles), model.classifier.mlp[0].normalized_shape[0], seed, empty=(0, 4))
    expected = _reference(engine, dense, tiles, ids, features)
    got = nuclei_from_dense(engine, dense, tiles, ids, (224, 224), DecodeConfig(), features=features)
    assert len(got) > 50 and len(set(got.tile.tolist())) == 7  # two tiles empty, the rest kept something
    _assert_identical(expected, got)


@pytest.mark.parametrize("features", [False, True])
def test_a_batch_without_nuclei_is_the_empty_set_either_way(model, features):
    engine = SimpleNamespace(classify=TorchEngine(model).classify)
    tiles = tile_grid(448, 224, 224, 32)
    dense = _dense(len(tiles), 256, 0, empty=range(len(tiles)))
    got = nuclei_from_dense(engine, dense, tiles, [0, 1], (224, 224), DecodeConfig(), features=features)
    _assert_identical(_reference(engine, dense, tiles, [0, 1], features), got)
    assert len(got) == 0 and got.feat is None


def test_nuclei_outside_every_core_are_dropped_in_both(model):
    """A tile whose peaks all lie beyond its core and margin keeps none, though it decoded some."""
    engine = SimpleNamespace(classify=TorchEngine(model).classify)
    grid = tile_grid(1000, 224, 224, 64)
    middle = grid[1:2]  # its core is the central stripe of the tile
    logit = torch.full((1, 56, 56), -6.0)
    logit[0, 20:36, 1:3] = 4.0  # a stripe at the tile's left edge, outside the core
    logit[0, 20:36:2, 1:3] = 5.0
    dense = DenseOutputs(torch.cat([logit[:, None], torch.full((1, 2, 56, 56), 0.5)], 1), torch.randn(1, 256, 56, 56))
    flat_rows = decode_batch(dense.centre, dense.fmap, engine.classify, (224, 224), 4, DecodeConfig())[0]
    got = nuclei_from_dense(engine, dense, middle, [7], (224, 224), DecodeConfig())
    assert len(flat_rows.xy) > 0 and len(got) == 0
    _assert_identical(_reference(engine, dense, middle, [7], False), got)
