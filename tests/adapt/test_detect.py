"""The network pass of adapt: tiles of many windows batched together, on the fast engines, against the reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from muse_fast.adapt.detect import detect, detect_windows
from muse_fast.adapt.inputs import Window
from muse_fast.model.weights import load_weights
from muse_fast.runtime.engines import TorchEngine
from muse_fast.runtime.precision import cpu_bf16_units
from muse_fast.train.metrics import hungarian_match

pytestmark = pytest.mark.slow  # the network runs on BRCA-M2C tiles: about 10 s per test on 2 cores


@pytest.fixture(scope="module")
def windows(brca_tiles):
    """Windows of the sizes adapt reads: whole tiles, a strip, and one smaller than a network tile."""
    images = [im.image for _, im in brca_tiles[:3]] + [brca_tiles[3][1].image[:150, :180]]
    images[1] = images[1][:, :300]
    return [Window(np.ascontiguousarray(im), np.zeros((0, 2)), np.zeros(0, np.int64), "g") for im in images]


def test_batched_windows_give_the_reference_nuclei(windows):
    model, meta = load_weights(None)
    reference = [detect(model, w, meta.tile_size) for w in windows]
    engine = TorchEngine(model, "cpu", "fp32")
    got = list(detect_windows(engine, [w.image for w in windows], meta.tile_size, batch=5))  # batches cross windows
    assert len(got) == len(windows)
    for ref, nuc in zip(reference, got):
        assert len(ref) > 0 and len(nuc) == len(ref)
        np.testing.assert_array_equal(nuc.xy, ref.xy)
        np.testing.assert_array_equal(nuc.feat, ref.feat)
        np.testing.assert_array_equal(nuc.class_id, ref.class_id)


@pytest.mark.skipif(not cpu_bf16_units(), reason="this CPU has no bf16 units (AMX or AVX512-BF16): bf16 is not used")
def test_bf16_features_classify_as_fp32_within_the_precision_gate(windows):
    """The precision gate of the engines (>= 99% of nuclei within 0.5 px, same class), on the point features."""
    model, meta = load_weights(None)
    images = [w.image for w in windows]
    ref = list(detect_windows(TorchEngine(model, "cpu", "fp32"), images, meta.tile_size))
    low = list(detect_windows(TorchEngine(model, "cpu", "bf16"), images, meta.tile_size))
    near = same = total = 0
    for a, b in zip(ref, low):
        pairs = np.asarray(hungarian_match(a.xy, b.xy, 0.5)).reshape(-1, 2)
        near += len(pairs)
        total += len(a)
        with torch.no_grad():
            ca = model.classifier(torch.from_numpy(a.feat[pairs[:, 0]])).argmax(1)
            cb = model.classifier(torch.from_numpy(b.feat[pairs[:, 1]])).argmax(1)
        same += int((ca == cb).sum())
    assert total > 500
    assert near >= 0.99 * total
    assert same >= 0.99 * near
