"""Model-only tiles/s per engine and precision on the CPU (issue 18), and what ``--engine auto`` picks here.

The interleaved same-process comparison behind docs/results.md is ``benchmarks/compare_engines.py``; this file keeps
the same measurements in the pytest-benchmark JSON (``MUSE_BENCH_QUICK=1``: batch 4, 2 rounds).
"""

import importlib.util
from dataclasses import replace

import numpy as np
import pytest

from muse_fast.errors import ConfigError
from muse_fast.model.weights import DEFAULT_WEIGHTS, file_sha256, load_weights
from muse_fast.runtime.engines import EngineInputs, create_engine
from muse_fast.runtime.precision import cpu_bf16_units

SPECS = ["torch:fp32", "torch:bf16", "onnx:fp32", "onnx:int8", "auto"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, quick):
    """The shipped weights, with the export and auto caches in a temporary folder."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MUSE_FAST_CACHE", str(tmp_path_factory.mktemp("cache")))
    model, meta = load_weights()
    yield EngineInputs(model, meta, file_sha256(DEFAULT_WEIGHTS), "cpu", 4 if quick else 16)
    mp.undo()


@pytest.mark.parametrize("spec", SPECS)
def test_model_only_tiles_per_second_by_precision(benchmark, inputs, quick, spec):
    name, _, precision = spec.partition(":")
    if name == "onnx" and importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("onnxruntime is not installed")
    if precision == "bf16" and not cpu_bf16_units():
        pytest.skip("this CPU has no AMX or AVX512-BF16: bf16 would be emulated")
    try:
        engine = create_engine(name, replace(inputs, precision=precision or "auto"))
    except ConfigError as exc:  # int8 on a convolutional network: refused, nothing to measure
        pytest.skip(str(exc))
    batch = np.random.default_rng(0).integers(0, 255, size=(inputs.batch_size, 224, 224, 3), dtype=np.uint8)
    benchmark.pedantic(engine.run, args=(batch,), rounds=2 if quick else 5, warmup_rounds=1)
    benchmark.extra_info.update(
        engine=engine.name,
        precision=engine.precision,
        bf16_units=cpu_bf16_units(),
        tiles_per_call=len(batch),
        tiles_per_second=len(batch) / benchmark.stats.stats.mean,
    )
