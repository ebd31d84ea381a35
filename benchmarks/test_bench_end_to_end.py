"""End to end on the real SVS: slide reading per backend, model-only and whole-pipeline tiles/s (CPU)."""

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from muse_fast.config import InferConfig
from muse_fast.io.readers import open_slide
from muse_fast.io.resample import read_tiles
from muse_fast.model.weights import DEFAULT_WEIGHTS, file_sha256, load_weights
from muse_fast.runtime.engines import ENGINES, EngineInputs, TorchEngine, create_engine
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


@pytest.mark.parametrize("size", [256, 1024])
def test_read_throughput_vs_openslide(benchmark, cmu_svs, quick, size):
    """Random level-0 reads on the real SVS per backend, as decoded MB/s and as a ratio to OpenSlide (one run).

    The timed call is the fast path (cuCIM's batched reader for a batch of regions); every backend's MB/s and its
    ratio to OpenSlide go to ``extra_info``.
    """
    n = 4 if quick else 32
    rng = np.random.default_rng(0)
    slides = {b: open_slide(cmu_svs, reader=b) for b in ("cucim", "openslide", "tiffslide")}
    w, h = slides["openslide"].level_dimensions[0]
    origins = [(int(rng.integers(0, w - size)), int(rng.integers(0, h - size))) for _ in range(n)]
    megabytes = n * size * size * 3 / 1e6
    rates = {}
    for name, slide in slides.items():
        start = time.perf_counter()
        for x, y in origins:
            slide.read_region(x, y, size, size)
        rates[name] = megabytes / (time.perf_counter() - start)
    with ThreadPoolExecutor(2) as pool:
        benchmark.pedantic(read_tiles, args=(slides["cucim"], origins, size, 1.0, pool), rounds=3, warmup_rounds=1)
    rates["cucim_batched"] = megabytes / benchmark.stats.stats.mean
    benchmark.extra_info["MB_per_s"] = {k: round(v, 1) for k, v in rates.items()}
    benchmark.extra_info["ratio_to_openslide"] = {k: round(v / rates["openslide"], 2) for k, v in rates.items()}


@pytest.fixture(scope="module")
def engine():
    model, meta = load_weights()
    return TorchEngine(model, "cpu"), meta


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    """Every engine available here, on the shipped weights (export cache in a temporary folder)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MUSE_FAST_CACHE", str(tmp_path_factory.mktemp("cache")))
    model, meta = load_weights()
    inputs = EngineInputs(model, meta, file_sha256(DEFAULT_WEIGHTS), "cuda" if torch.cuda.is_available() else "cpu")
    built = {name: create_engine(name, inputs) for name, e in ENGINES.items() if e.unavailable_reason() is None}
    yield built
    mp.undo()


@pytest.mark.parametrize("name", list(ENGINES))
def test_model_only_tiles_per_second(benchmark, engines, quick, name):
    """Model-only throughput per engine on the same batches (tiles/s = tiles_per_call / mean)."""
    if name not in engines:
        pytest.skip(f"engine {name} unavailable: {ENGINES[name].unavailable_reason()}")
    batch = np.random.default_rng(0).integers(0, 255, size=(4 if quick else 16, 224, 224, 3), dtype=np.uint8)

    def run():
        out = engines[name].run(batch)
        if out.fmap.is_cuda:
            torch.cuda.synchronize()
        return out

    benchmark.pedantic(run, rounds=2 if quick else 5, warmup_rounds=1)
    benchmark.extra_info["tiles_per_call"] = len(batch)
    benchmark.extra_info["tiles_per_second"] = len(batch) / benchmark.stats.stats.mean


@pytest.mark.parametrize("tta", [False, True], ids=["plain", "tta"])
def test_flip_tta_cost(benchmark, engine, quick, tta):
    """Model-only tiles/s of the torch engine with and without flip TTA (``--tta``: 3 passes) on the same batch."""
    from muse_fast.runtime.tta import FlipTTAEngine

    eng = FlipTTAEngine(engine[0]) if tta else engine[0]
    batch = np.random.default_rng(0).integers(0, 255, size=(4 if quick else 16, 224, 224, 3), dtype=np.uint8)
    benchmark.pedantic(eng.run, args=(batch,), rounds=2 if quick else 5, warmup_rounds=1)
    benchmark.extra_info["tiles_per_second"] = len(batch) / benchmark.stats.stats.mean


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
    benchmark.extra_info["tiles_per_second"] = tiles / benchmark.stats.stats.mean
    benchmark.extra_info["tiles"] = tiles
    benchmark.extra_info["nuclei"] = len(nuclei)
    assert len(nuclei) > 0


def _synthetic_tissue_slide(path, side: int) -> None:
    """A large JPEG-tiled pyramid-free TIFF at 0.5 um/px with H&E-like blobs, generated tile by tile."""
    import tifffile

    rng = np.random.default_rng(0)

    def tiles():
        yy, xx = np.mgrid[0:256, 0:256]
        for _ in range((side // 256) ** 2):
            tile = np.full((256, 256, 3), 235, np.uint8)
            for cy, cx in rng.uniform(0, 256, size=(60, 2)):
                dot = (yy - cy) ** 2 + (xx - cx) ** 2 < 16
                tile[dot] = (120, 60, 150)
            yield tile

    tifffile.imwrite(
        path,
        tiles(),
        shape=(side, side, 3),
        dtype=np.uint8,
        tile=(256, 256),
        compression="jpeg",
        resolution=(20000.0, 20000.0),
        resolutionunit="CENTIMETER",
        metadata=None,
    )


@pytest.mark.parametrize("source", ["cmu_svs", "synthetic_large"])
def test_pipeline_efficiency(benchmark, engine, cmu_svs, tmp_path, quick, source):
    """End-to-end vs model-only tiles/s on the same batches (``muse-fast bench``), and peak RSS."""
    from muse_fast.runtime.bench import bench_slide

    eng, meta = engine
    path = cmu_svs
    if source == "synthetic_large":
        path = tmp_path / "large.tif"
        _synthetic_tissue_slide(path, 2048 if quick else 8192)
    result = benchmark.pedantic(bench_slide, args=(path, eng, meta, 16, None, 2 if quick else 0), rounds=1)
    benchmark.extra_info.update({k: v for k, v in result.items() if k != "slide"})
    assert result["pipeline_efficiency"] > 0
