"""The device decode (one packed copy per batch) gives the nuclei of the CPU decode; host transfers are counted."""

import os
from functools import partial

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils._python_dispatch import TorchDispatchMode

import muse_fast.post.device_decode as dd
import muse_fast.runtime.pipeline as pipeline
import muse_fast.runtime.predict as predict
from muse_fast.config import InferConfig
from muse_fast.io.readers import open_slide
from muse_fast.kernels.peaks import find_peaks
from muse_fast.kernels.point_gather import gather_points
from muse_fast.model.weights import load_weights
from muse_fast.post.decode import DecodeConfig, decode_batch
from muse_fast.runtime.engines import TorchEngine
from muse_fast.runtime.predict import predict_image

# ops that make a CUDA stream wait for the host (a value or a data-dependent shape goes device -> host)
SYNC_OPS = {"_local_scalar_dense", "nonzero", "masked_select", "item", "unique", "_unique2"}


class SyncCounter(TorchDispatchMode):
    """Counts the dispatched ops that would block on the device (also on CPU tensors, where nothing blocks)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        bool_index = name in ("index", "index_put", "index_put_") and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] if len(args) > 1 else []) or []
        )
        if name in SYNC_OPS or bool_index:
            self.seen.append(name)
        return func(*args, **(kwargs or {}))


@pytest.fixture(scope="module")
def model():
    return load_weights()[0].eval()


def _dense(batch: int, dim: int, seed: int = 0):
    """Centre logits with a few dozen sharp peaks per tile (some tiles empty), offsets and features."""
    g = torch.Generator().manual_seed(seed)
    logit = torch.full((batch, 56, 56), -6.0)
    for i in range(1, batch):  # tile 0 has no peaks
        n = int(torch.randint(1, 60, (1,), generator=g))
        rows, cols = torch.randint(0, 56, (2, n), generator=g)
        logit[i, rows, cols] = torch.rand(n, generator=g) * 6 - 1
    offsets = torch.rand(batch, 2, 56, 56, generator=g) * 1.2 - 0.1
    centre = torch.cat([logit[:, None], offsets], dim=1)
    return centre, torch.randn(batch, dim, 56, 56, generator=g)


def _assert_same(expected, got, prob_atol: float = 1e-6):
    assert len(expected) == len(got)
    for e, g in zip(expected, got):
        assert np.array_equal(e.xy.numpy(), g.xy) and np.array_equal(e.score.numpy(), g.score)
        assert np.array_equal(e.class_id.numpy(), g.class_id)
        np.testing.assert_allclose(g.class_prob, e.class_prob.numpy(), rtol=0, atol=prob_atol)


@pytest.mark.parametrize("rows", [256, 4])  # 4: fewer rows than peaks, so the batch is decoded again
def test_packed_decode_matches_cpu_decode_with_one_copy(model, monkeypatch, rows):
    centre, fmap = _dense(6, _dim(model))
    cfg = DecodeConfig()
    expected = decode_batch(centre, fmap, model.classifier, (224, 224), 4, cfg)
    copies = []
    monkeypatch.setattr(dd, "TRANSFER_HOOK", lambda name, nbytes: copies.append(nbytes))
    decoder = dd.PackedDecoder(rows)
    got = decoder(centre, fmap, model.classifier, (224, 224), 4, cfg)
    _assert_same(expected, got)
    assert len(copies) == (1 if rows == 256 else 2)
    assert decoder.rows >= max(len(t.score) for t in got)
    copies.clear()
    _assert_same(expected, decoder(centre, fmap, model.classifier, (224, 224), 4, cfg))
    assert len(copies) == 1  # the grown row count is kept


def _dim(model) -> int:
    return next(m for m in model.classifier.modules() if isinstance(m, torch.nn.LayerNorm)).normalized_shape[0]


def test_device_side_decode_has_no_hidden_host_syncs(model, monkeypatch):
    """The kernels the GPU runs (Triton, here under the interpreter) and the packing make no blocking read."""
    pytest.importorskip("triton")
    if os.environ.get("TRITON_INTERPRET") != "1":  # compiled Triton refuses CPU tensors
        pytest.skip("needs TRITON_INTERPRET=1; on a GPU, test_cuda.py::test_cuda_device_decode_has_no_host_sync")
    monkeypatch.setattr(dd, "find_peaks", partial(find_peaks, impl="triton"))
    monkeypatch.setattr(dd, "gather_points", partial(gather_points, impl="triton"))
    centre, fmap = _dense(3, _dim(model), seed=1)
    with SyncCounter() as counter:
        packed = dd.decode_packed(centre, fmap, model.classifier, (224, 224), 4, DecodeConfig(), 64)
    assert counter.seen == []
    expected = decode_batch(centre, fmap, model.classifier, (224, 224), 4, DecodeConfig())
    # features from another gather kernel differ by fp32 rounding (~1e-7), which moves probabilities by ~1e-6
    _assert_same(expected, dd.unpack(packed.numpy(), 64), prob_atol=1e-5)


def test_the_counter_sees_the_syncs_of_the_cpu_decode(model):
    """The seam is not blind: the CPU decode's count reads and boolean masks are seen."""
    centre, fmap = _dense(3, _dim(model), seed=2)
    with SyncCounter() as counter:
        decode_batch(centre, fmap, model.classifier, (224, 224), 4, DecodeConfig())
    assert "_local_scalar_dense" in counter.seen and "index" in counter.seen


def _image(side: int) -> np.ndarray:
    """H&E-like dots on a pale background."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:side, 0:side]
    image = np.full((side, side, 3), 235, np.uint8)
    for cy, cx in rng.uniform(0, side, size=(500, 2)):
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < 20] = (110, 50, 150)
    return image


def _slide_png(path, side: int = 600) -> None:
    Image.fromarray(_image(side)).save(path, dpi=(50800, 50800))  # 0.5 um/px


def test_overlapped_pipeline_and_device_decode_give_the_same_nuclei(model, monkeypatch, tmp_path):
    """The CUDA path (decode in a worker thread, packed copies) run with CPU tensors: same nuclei as the CPU path."""
    _, meta = load_weights()
    engine = TorchEngine(model, "cpu")
    _slide_png(tmp_path / "s.png")
    cfg = InferConfig(out_dir=tmp_path, batch_size=4, skip_background=False, quiet=True)
    slide = open_slide(tmp_path / "s.png")
    try:
        expected, tiles, _ = pipeline.predict_slide(slide, engine, meta, cfg)
        copies = []
        monkeypatch.setattr(dd, "TRANSFER_HOOK", lambda name, nbytes: copies.append(name))
        monkeypatch.setattr(predict, "DEVICE_DECODE", {"cpu"})
        monkeypatch.setattr(pipeline, "OVERLAP_DEVICES", {"cpu"})
        got, tiles_again, _ = pipeline.predict_slide(slide, engine, meta, cfg)
    finally:
        slide.close()
    assert tiles == tiles_again == 9 and len(expected) > 0
    assert len(copies) == 3  # one per batch (9 tiles in batches of 4)
    assert np.array_equal(expected.xy, got.xy) and np.array_equal(expected.class_id, got.class_id)
    assert np.array_equal(expected.score, got.score)


def test_predict_image_device_path_matches(model, monkeypatch):
    _, meta = load_weights()
    engine = TorchEngine(model, "cpu")
    image = _image(400)
    expected = predict_image(engine, image, meta.tile_size, 32, DecodeConfig(), batch_size=8)
    monkeypatch.setattr(predict, "DEVICE_DECODE", {"cpu"})
    got = predict_image(engine, image, meta.tile_size, 32, DecodeConfig(), batch_size=8)
    assert len(expected) == len(got) and np.array_equal(expected.xy, got.xy)
