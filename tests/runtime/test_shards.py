"""Checkpoint shards: what a store keeps in memory for the final pass equals what it reads back from disk."""

import numpy as np

from muse_fast.runtime import shards
from muse_fast.runtime.predict import Nuclei
from muse_fast.runtime.shards import ShardStore


def _nuclei(rng, n, features):
    return Nuclei(
        rng.uniform(0, 500, (n, 2)),
        rng.uniform(0.3, 1, n).astype(np.float32),
        rng.integers(0, 3, n),
        rng.uniform(0.3, 1, n).astype(np.float32),
        rng.integers(0, 9, n),
        rng.normal(size=(n, 8)).astype(np.float32) if features else None,
    )


def _same(a: Nuclei, b: Nuclei):
    for f in Nuclei.FIELDS:
        x, y = getattr(a, f), getattr(b, f)
        assert (x is None) == (y is None), f
        if x is not None:
            assert x.dtype == y.dtype and np.array_equal(x, y), f


def test_memory_reads_equal_disk_reads_and_the_cap_holds(tmp_path, monkeypatch):
    monkeypatch.setattr(shards, "MEMORY_ROWS", 60)  # the third batch no longer fits
    rng = np.random.default_rng(0)
    store = ShardStore(tmp_path, "s", {"k": 1})
    batches = [_nuclei(rng, 25, False), _nuclei(rng, 30, True), _nuclei(rng, 20, False), Nuclei.empty()]
    for i, nuc in enumerate(batches):
        store.write(i, nuc, skipped=i, unreadable={100 + i: f"bad {i}"} if i % 2 else {})
    assert sorted(store._memory) == [0, 1, 3] and store._with_features == {1}
    disk = ShardStore(tmp_path, "s", {"k": 1})  # the same fingerprint: the saved batches, nothing in memory
    assert not disk._memory
    for i in range(len(batches)):
        for features in (False, True):
            (got, skipped), (ref, ref_skipped) = store.read(i, features), disk.read(i, features)
            _same(got, ref)
            assert skipped == ref_skipped == i
    assert store.read(1)[0].feat.dtype == np.float16  # features come from disk, as the embeddings file stores them
    assert store.tally(4) == disk.tally(4) == (6, {101: "bad 1", 103: "bad 3"})
