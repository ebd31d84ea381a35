"""End to end on the real SVS: slide reading per backend, model-only and whole-pipeline tiles/s (CPU)."""

import numpy as np
import pytest
import torch

from muse_fast.config import InferConfig
from muse_fast.io.readers import open_slide
from muse_fast.model.weights import load_weights
from muse_fast.runtime.engines import create_engine
from muse_fast.runtime.pipeline import predict_slide


@pytest.mark.parametrize("backend", ["cucim", "openslide", "tiffslide"])
@pytest.mark.parametrize("size", [256, 1024])
def test_read_region(benchmark, cmu_svs, backend, size):
    slide = open_slide(cmu_svs, reader=backend)
    rng = np.random.default_rng(0)
    w, h = slide.level_dimensions[0]

    def read():
        x, y = int(rng.integers(0, w - size)), int(rng.integers(0, h - size))
        return slide.read_region(x, y, size, size)

    region = benchmark(read)
    benchmark.extra_info["decoded_MB_per_call"] = size * size * 3 / 1e6
    assert region.shape == (size, size, 3)


@pytest.fixture(scope="module")
def engine():
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model, meta = load_weights()
    return create_engine("torch", model, "cpu"), meta


def test_model_only_tiles_per_second(benchmark, engine, quick):
    eng, meta = engine
    batch = np.random.default_rng(0).integers(0, 255, size=(4 if quick else 16, 224, 224, 3), dtype=np.uint8)
    benchmark.pedantic(eng.run, args=(batch,), rounds=2 if quick else 5, warmup_rounds=1)
    benchmark.extra_info["tiles_per_call"] = len(batch)


def test_pipeline_on_cmu_svs(benchmark, engine, cmu_svs, tmp_path, quick):
    eng, meta = engine
    cfg = InferConfig(out_dir=tmp_path, quiet=True)

    def run():
        slide = open_slide(cmu_svs)
        try:
            return predict_slide(slide, eng, meta, cfg)
        finally:
            slide.close()

    nuclei, tiles, skipped = benchmark.pedantic(run, rounds=1 if quick else 3, warmup_rounds=0)
    benchmark.extra_info["tiles"] = tiles
    benchmark.extra_info["nuclei"] = len(nuclei)
    assert len(nuclei) > 0
