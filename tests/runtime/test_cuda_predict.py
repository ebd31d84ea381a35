"""The whole CUDA path (TorchEngine on the GPU, device decode, overlapped pipeline) against the CPU path, and run to
run determinism (skipped without CUDA; run by benchmarks/gpu_check.sh)."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from muse_fast.config import InferConfig
from muse_fast.io.readers import open_slide
from muse_fast.model.weights import load_weights
from muse_fast.post.decode import DecodeConfig, decode_batch
from muse_fast.runtime.engines import TorchEngine
from muse_fast.runtime.pipeline import predict_slide
from muse_fast.runtime.predict import predict_image

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def engines():
    torch.backends.cudnn.allow_tf32 = False  # fp32 on both sides; TF32 convolutions round to 10 mantissa bits
    torch.backends.cuda.matmul.allow_tf32 = False
    cpu_model, meta = load_weights()
    gpu_model, _ = load_weights()
    return TorchEngine(cpu_model, "cpu", "fp32"), TorchEngine(gpu_model, "cuda", precision="fp32"), meta


def _image() -> np.ndarray:
    """The carried CMU crop when gpu_check.sh provides one, else H&E-like dots."""
    path = os.environ.get("MUSE_GPU_CHECK_IMAGE")
    if path:
        return np.asarray(Image.open(path).convert("RGB"))[:900, :900]
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:700, 0:700]
    image = np.full((700, 700, 3), 235, np.uint8)
    for cy, cx in rng.uniform(0, 700, size=(900, 2)):
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < 20] = (110, 50, 150)
    return image


def _agree(a, b) -> None:
    assert len(a) == len(b) and len(a) > 0
    assert np.abs(a.xy - b.xy).max() < 0.5
    assert (a.class_id == b.class_id).mean() > 0.99


def test_decode_batch_on_cuda_matches_cpu(engines):
    cpu, gpu, meta = engines
    tiles = _image()[None, :224, :224].repeat(4, 0)
    ref, got = cpu.run(tiles), gpu.run(tiles)
    a = decode_batch(ref.centre, ref.fmap, cpu.classify, (224, 224), 4, DecodeConfig())
    b = decode_batch(got.centre, got.fmap, gpu.classify, (224, 224), 4, DecodeConfig())
    for x, y in zip(a, b):
        assert len(x.score) == len(y.score)
        assert (x.xy - y.xy.cpu()).abs().max() < 0.5 if len(x.score) else True


def test_predict_image_on_cuda_matches_cpu_and_is_deterministic(engines):
    cpu, gpu, meta = engines
    image = _image()
    a = predict_image(cpu, image, meta.tile_size, 32, DecodeConfig())
    b = predict_image(gpu, image, meta.tile_size, 32, DecodeConfig())
    _agree(a, b)
    again = predict_image(gpu, image, meta.tile_size, 32, DecodeConfig())
    assert np.array_equal(b.xy, again.xy) and np.array_equal(b.score, again.score)


def test_overlapped_slide_pipeline_on_cuda_matches_cpu(engines, tmp_path):
    cpu, gpu, meta = engines
    Image.fromarray(_image()).save(tmp_path / "s.png")
    cfg = InferConfig(out_dir=tmp_path, batch_size=4, skip_background=False, quiet=True, mpp=0.5)
    results = []
    for engine in (cpu, gpu):
        slide = open_slide(tmp_path / "s.png", mpp=0.5)
        try:
            results.append(predict_slide(slide, engine, meta, cfg)[0])
        finally:
            slide.close()
    _agree(*results)
