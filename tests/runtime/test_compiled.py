"""The compiled engine (inductor, AOTInductor package): built once per key, loaded without compiling by a second
process, the same outputs as the eager network, and eager with one line where no C++ compiler exists."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from compiled_tiny import BATCH, META, THREADS, tiles, tiny_model

from muse_fast.errors import BackendUnavailable, ConfigError
from muse_fast.runtime import compiled
from muse_fast.runtime.engines import EngineInputs, TorchEngine, create_engine

HERE = Path(__file__).parent


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MUSE_FAST_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _inputs(precision="bf16", device="cpu"):
    return EngineInputs(tiny_model(), META, "tiny-seed-0", device, BATCH, precision)


def test_without_a_compiler_it_runs_eager_and_says_so_in_one_line(monkeypatch, caplog, cache):
    monkeypatch.setattr(compiled, "compiler_missing_reason", lambda: "no C++ compiler found (test); install g++")
    with caplog.at_level(logging.WARNING, logger="muse_fast.runtime"):
        engine = create_engine("compiled", _inputs())
    assert isinstance(engine, TorchEngine) and engine.precision == "bf16"
    [record] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    message = record.getMessage()
    assert "\n" not in message and "install g++" in message and "eager torch engine" in message
    assert not list((cache / "compiled").glob("*.pt2"))  # nothing half-built is left


def test_a_failing_build_runs_eager_and_leaves_no_package(monkeypatch, caplog, cache):
    def broken(*args, **kwargs):
        raise RuntimeError("C++ compile error: g++ exited with 1\nmore lines")

    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", broken)
    with caplog.at_level(logging.WARNING, logger="muse_fast.runtime"):
        engine = create_engine("compiled", _inputs())
    assert isinstance(engine, TorchEngine)
    assert "compiling the network failed (RuntimeError: C++ compile error" in caplog.text
    assert not [p for p in (cache / "compiled").iterdir() if p.suffix == ".pt2"]


def test_fp16_and_cuda_are_one_line_refusals():
    with pytest.raises(ConfigError, match="engine 'compiled' does not offer precision 'fp16'; choose one of"):
        create_engine("compiled", _inputs("fp16"))
    with pytest.raises(BackendUnavailable, match="runs on the CPU; on CUDA use --engine trt or torch"):
        compiled.CompiledEngine(_inputs(device="cuda"))


def _fresh_process(cache: Path, out: Path) -> dict:
    env = {**os.environ, "MUSE_FAST_CACHE": str(cache), "OMP_NUM_THREADS": str(THREADS)}
    done = subprocess.run(
        [sys.executable, str(HERE / "compiled_tiny.py"), str(out)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_second_process_loads_the_package_without_compiling(cache, tmp_path):
    """Inductor's own counters: the first process compiles (pattern matches, graph-cache lookups), the second none."""
    first = _fresh_process(cache, tmp_path / "first.npz")
    second = _fresh_process(cache, tmp_path / "second.npz")
    assert first["engine"] == second["engine"] == "compiled"
    assert first["compiled_now"] and first["inductor"], first
    assert not second["compiled_now"] and second["inductor"] == {}, second
    assert len(list((cache / "compiled").glob("*.pt2"))) == 1
    a, b = np.load(tmp_path / "first.npz"), np.load(tmp_path / "second.npz")
    np.testing.assert_array_equal(a["centre"], b["centre"])  # the same code and weights
    # the last batch of a slide is short: padded to the compiled shape, the same outputs for the tiles it has
    np.testing.assert_allclose(a["short"], a["centre"][:3], atol=1e-5)
    # against the eager network at the same precision (bf16 autocast, fp32 centre logits)
    ref = TorchEngine(tiny_model(), "cpu", "bf16").run(tiles())
    assert a["centre"].dtype == np.float32
    np.testing.assert_allclose(a["centre"], ref.centre.numpy(), atol=0.05)
    np.testing.assert_allclose(a["fmap"], ref.fmap.float().numpy(), atol=0.05)


@pytest.mark.slow
def test_compiled_bf16_finds_the_nuclei_of_eager_bf16_on_real_brca_m2c_tiles(brca_dir):
    """The shipped network compiled (about a minute on 2 cores, once per test session: ``infer``'s default
    ``--engine auto`` shares the package) against the eager reference on real tiles; each image's last batch is
    short, so padding is exercised too."""
    from muse_fast.model.weights import file_sha256, load_weights, resolve_weights
    from muse_fast.post.decode import DecodeConfig
    from muse_fast.runtime.predict import predict_image
    from muse_fast.train.data.brca import load_split
    from muse_fast.train.precision_gate import paired_within

    model, meta = load_weights()
    inputs = EngineInputs(model, meta, file_sha256(resolve_weights(None)), "cpu", 16, "bf16")
    engine = create_engine("compiled", inputs)
    assert engine.name == "compiled"
    eager = TorchEngine(model, "cpu", "bf16")
    for image in [im.image for im in load_split("val")[:2]]:
        ref = predict_image(eager, image, meta.tile_size, 32, DecodeConfig())
        got = predict_image(engine, image, meta.tile_size, 32, DecodeConfig())
        pairs = paired_within(ref.xy, got.xy, 0.5)
        assert len(ref) > 50 and pairs["share"] >= 0.98, pairs
        same = ref.class_id[pairs["pairs"]] == got.class_id[pairs["partner"]]
        assert same.mean() >= 0.98


@pytest.mark.parametrize(
    "precision, units, expected",
    [
        ("auto", ["amx_bf16"], ["torch fp32", "torch bf16", "compiled bf16"]),
        ("auto", [], ["torch fp32", "compiled fp32"]),  # no bf16 units: fp32 is what compiling can speed up
        ("fp32", ["amx_bf16"], ["torch fp32", "compiled fp32"]),
        ("bf16", ["amx_bf16"], ["torch bf16", "compiled bf16"]),
        ("bf16", [], ["torch bf16"]),  # emulated bf16 is not worth a compile
    ],
)
def test_auto_times_the_compiled_engine_where_a_compiler_exists(precision, units, expected):
    from muse_fast.runtime.autotune import cpu_candidates

    assert [c.label for c in cpu_candidates(precision, False, units, compiler=True)] == expected
    assert "compiled" not in {c.engine for c in cpu_candidates(precision, False, units, compiler=False)}


def test_auto_skips_a_compiled_candidate_that_falls_back_to_eager(monkeypatch, caplog):
    """A failed build is no candidate of its own: auto does not time eager under the compiled engine's name."""
    from muse_fast.runtime import autotune, engines

    def broken(*args, **kwargs):
        raise BackendUnavailable("compiling the network failed (test)")

    timed = []

    def measure(built, batch, rounds=autotune.CALIBRATION_ROUNDS):
        timed.extend(built)
        speeds = {label: 100.0 if engine.name == "compiled" else 10.0 for label, engine in built.items()}
        return autotune.Measurement(speeds, cpu_share=1.0)

    monkeypatch.setattr(compiled, "compiler_missing_reason", lambda: None)
    monkeypatch.setattr(compiled, "build_package", broken)
    monkeypatch.setattr(engines, "_onnx_reason", lambda: "not in this test")
    monkeypatch.setattr(autotune, "measure", measure)
    with caplog.at_level(logging.INFO, logger="muse_fast.runtime"):
        engine = create_engine("auto", _inputs("auto"))
    assert engine.name == "torch" and timed and not any(label.startswith("compiled") for label in timed)
    assert "engine auto: skipping compiled" in caplog.text and "it would run torch" in caplog.text
