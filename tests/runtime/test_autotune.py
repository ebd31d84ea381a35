"""Issue 18: ``--engine auto`` on the CPU: candidates, the choice, and its cache (re-measured when anything changes)."""

import json
import logging

import numpy as np
import pytest

from muse_fast.runtime import autotune
from muse_fast.runtime.autotune import AutoChoice, Candidate, choose, cpu_candidates

MACHINE = {"cpu": "AMD EPYC 9R14", "flags_sha256": "ab", "bf16_units": ["avx512_bf16"], "logical_cpus": 2, "threads": 1}
KEY = {"machine": MACHINE, "model": {"weights_sha256": "a" * 64}, "versions": {"muse_fast": "0.1.0"}}
FOUR = [Candidate("torch", "fp32"), Candidate("torch", "bf16"), Candidate("onnx", "fp32"), Candidate("onnx", "int8")]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MUSE_FAST_CACHE", str(tmp_path))
    return tmp_path


class FakeEngine:
    def __init__(self, candidate: Candidate) -> None:
        self.candidate = candidate

    def run(self, tiles):
        return None


class Measured:
    """Stands in for :func:`autotune.measure` (no wall-clock in tests): fixed speeds and CPU share, and how often it
    ran."""

    def __init__(self, speeds: dict[str, float], cpu_share: float = 0.97) -> None:
        self.speeds, self.share, self.calls = speeds, cpu_share, 0

    def __call__(self, engines, batch, rounds=autotune.CALIBRATION_ROUNDS):
        self.calls += 1
        return autotune.Measurement({label: self.speeds[label] for label in engines}, self.share)


def _choose(monkeypatch, speeds, key=KEY, candidates=FOUR, cpu_share=0.97):
    measured = Measured(speeds, cpu_share)
    monkeypatch.setattr(autotune, "measure", measured)
    built = []

    def build(candidate):
        built.append(candidate.label)
        return FakeEngine(candidate)

    choice, engine = choose(candidates, build, key, np.zeros((1, 4, 4, 3), np.uint8), MACHINE)
    return choice, engine, built, measured.calls


SPEEDS = {"torch fp32": 20.9, "torch bf16": 46.6, "onnx fp32": 29.8, "onnx int8": 38.3}


@pytest.mark.parametrize(
    "precision, onnx, units, expected",
    [
        ("auto", True, ["avx512_bf16"], ["torch fp32", "torch bf16", "onnx fp32", "onnx int8"]),
        ("auto", True, [], ["torch fp32", "onnx fp32", "onnx int8"]),  # no bf16 units: bf16 never wins
        ("auto", False, ["amx_bf16"], ["torch fp32", "torch bf16"]),
        ("fp32", True, ["avx512_bf16"], ["torch fp32", "onnx fp32"]),
        ("int8", True, [], ["onnx int8"]),
        ("bf16", True, [], ["torch bf16"]),  # asked for: the torch engine warns that it is emulated
        ("int8", False, [], ["onnx int8"]),  # the onnx engine says that onnxruntime is missing
    ],
)
def test_candidates(precision, onnx, units, expected):
    assert [c.label for c in cpu_candidates(precision, onnx, units)] == expected


def test_int8_is_no_candidate_for_a_convolutional_network():
    assert [c.label for c in cpu_candidates("auto", True, [], int8_useful=False)] == ["torch fp32", "onnx fp32"]
    assert [c.label for c in cpu_candidates("int8", True, [], int8_useful=False)] == ["onnx int8"]  # engine refuses


def test_the_fastest_is_picked_and_its_engine_reused(monkeypatch, cache):
    choice, engine, built, calls = _choose(monkeypatch, SPEEDS)
    assert choice.candidate == Candidate("torch", "bf16") and not choice.cached and calls == 1
    assert engine.candidate == choice.candidate and sorted(built) == sorted(SPEEDS)
    saved = json.loads(choice.cache_path.read_text())
    assert choice.cache_path.parent == cache / "autotune"
    assert saved["choice"] == "torch bf16" and saved["tiles_per_s"] == SPEEDS and saved["key"]["machine"] == MACHINE


def test_a_second_run_reads_the_cache_without_building_or_measuring(monkeypatch):
    _choose(monkeypatch, SPEEDS)
    choice, engine, built, calls = _choose(monkeypatch, {k: 1.0 for k in SPEEDS})
    assert choice.cached and choice.candidate.label == "torch bf16" and engine is None
    assert built == [] and calls == 0


@pytest.mark.parametrize(
    "change",
    [
        {"machine": {**MACHINE, "cpu": "Intel(R) Xeon(R) Platinum 8488C"}},
        {"machine": {**MACHINE, "threads": 2}},
        {"model": {"weights_sha256": "b" * 64}},
        {"versions": {"muse_fast": "0.2.0"}},
    ],
)
def test_a_changed_machine_model_or_version_is_measured_again(monkeypatch, change):
    _choose(monkeypatch, SPEEDS)
    faster_onnx = {**SPEEDS, "onnx int8": 99.0}
    choice, _, built, calls = _choose(monkeypatch, faster_onnx, key={**KEY, **change})
    assert not choice.cached and calls == 1 and len(built) == 4 and choice.candidate.label == "onnx int8"


def test_a_damaged_cache_file_is_measured_again(monkeypatch):
    choice, *_ = _choose(monkeypatch, SPEEDS)
    choice.cache_path.write_text("{not json")
    again, _, _, calls = _choose(monkeypatch, SPEEDS)
    assert not again.cached and calls == 1 and json.loads(again.cache_path.read_text())["choice"] == "torch bf16"


def test_a_measurement_on_a_busy_machine_serves_this_run_only(monkeypatch):
    """A CI run once cached 4.3 tiles/s measured under load: a busy measurement is used, said so, and never cached."""
    busy, _, _, calls = _choose(monkeypatch, {**SPEEDS, "onnx int8": 99.0}, cpu_share=0.41)
    assert busy.candidate.label == "onnx int8" and not busy.cached and busy.cache_path is None and calls == 1
    assert not (autotune.cache_path({**KEY, "candidates": [c.label for c in FOUR]})).exists()
    line = busy.line()
    assert len(line.splitlines()) == 1 and "measured now, for this run only: the CPU was busy" in line
    assert "got 41% of its threads' CPU time" in line
    quiet, *_, calls = _choose(monkeypatch, SPEEDS)  # the next run measures again, quiet: cached
    assert not quiet.cached and calls == 1 and quiet.cache_path.is_file()
    assert _choose(monkeypatch, {k: 1.0 for k in SPEEDS})[0].cached


def test_retune_measures_again_and_replaces_the_cached_entry(monkeypatch):
    first = _choose(monkeypatch, SPEEDS)[0]
    monkeypatch.setenv(autotune.RETUNE_ENV, "1")
    again, _, built, calls = _choose(monkeypatch, {**SPEEDS, "onnx fp32": 80.0})
    assert not again.cached and calls == 1 and len(built) == 4 and again.candidate.label == "onnx fp32"
    assert again.cache_path == first.cache_path and json.loads(first.cache_path.read_text())["choice"] == "onnx fp32"
    monkeypatch.setenv(autotune.RETUNE_ENV, "0")  # "0" is off: the new entry is read
    assert _choose(monkeypatch, {k: 1.0 for k in SPEEDS})[0].candidate.label == "onnx fp32"


class FakeClock:
    """Stands in for :func:`autotune.cpu_clock`: (wall, CPU) samples in order, e.g. 10 s of wall with 6 s of CPU."""

    def __init__(self, *samples: tuple[float, float]) -> None:
        self.samples = list(samples)

    def __call__(self) -> tuple[float, float]:
        return self.samples.pop(0)


@pytest.mark.parametrize("cores, cpu, expected", [(1, 9.5, 0.95), (1, 6.0, 0.6), (2, 6.0, 0.3), (2, 19.0, 0.95)])
def test_the_cpu_share_of_the_timed_rounds(monkeypatch, cores, cpu, expected):
    """measure() samples the clock around its timed rounds only; the share is capped at the usable cores."""
    import torch

    monkeypatch.setattr(autotune, "usable_cpus", lambda: cores)
    monkeypatch.setattr(autotune, "cpu_clock", FakeClock((100.0, 50.0), (110.0, 50.0 + cpu)))
    threads = torch.get_num_threads()
    engines = {c.label: FakeEngine(c) for c in FOUR[:2]}
    measured = autotune.measure(engines, np.zeros((2, 4, 4, 3), np.uint8), rounds=2)
    assert set(measured.tiles_per_s) == {"torch fp32", "torch bf16"}
    assert measured.cpu_share == pytest.approx(cpu / (10.0 * min(threads, cores)))
    if threads >= cores:
        assert measured.cpu_share == pytest.approx(expected)
    assert bool(autotune.busy_reason(measured.cpu_share)) == (measured.cpu_share < autotune.BUSY_SHARE)


def test_a_candidate_that_cannot_run_is_skipped(monkeypatch, caplog):
    measured = Measured(SPEEDS)
    monkeypatch.setattr(autotune, "measure", measured)

    def build(candidate):
        if candidate.engine == "onnx":
            raise RuntimeError("no ONNX here\nsecond line")
        return FakeEngine(candidate)

    with caplog.at_level(logging.INFO, logger="muse_fast.runtime"):
        choice, engine = choose(FOUR, build, KEY, np.zeros((1, 4, 4, 3), np.uint8), MACHINE)
    assert choice.candidate.label == "torch bf16" and set(choice.tiles_per_s) == {"torch fp32", "torch bf16"}
    assert sum("skipping onnx" in r.getMessage() for r in caplog.records) == 2


def test_a_single_candidate_is_not_measured(monkeypatch):
    choice, engine, built, calls = _choose(monkeypatch, SPEEDS, candidates=[Candidate("onnx", "int8")])
    assert choice.candidate.label == "onnx int8" and calls == 0 and built == [] and engine is None
    assert choice.line() == "engine auto: onnx int8, the only candidate for --precision int8"


def test_the_line_says_what_was_picked_and_why(tmp_path):
    choice = AutoChoice(Candidate("torch", "bf16"), SPEEDS, False, tmp_path / "x.json", MACHINE)
    line = choice.line()
    assert len(line.splitlines()) == 1
    assert line.startswith("engine auto: torch bf16, the fastest at 46.6 tiles/s (onnx int8 38.3, onnx fp32 29.8")
    assert "AMD EPYC 9R14 with avx512_bf16, 1 thread;" in line and "measured now" in line


def test_auto_on_the_cpu_builds_real_engines_once_per_key(monkeypatch, caplog):
    """The whole path with the shipped weights (ONNX Runtime and the compiled engine left out to keep it short):
    measured, then cached."""
    import muse_fast.runtime.compiled as compiled
    import muse_fast.runtime.engines as engines
    from muse_fast.model.weights import load_weights
    from muse_fast.runtime.engines import EngineInputs, TorchEngine, create_engine

    monkeypatch.setattr(engines, "_onnx_reason", lambda: "left out in this test")
    monkeypatch.setattr(compiled, "compiler_missing_reason", lambda: "left out in this test")
    monkeypatch.setattr(autotune, "machine_key", lambda threads: {**MACHINE, "threads": threads})
    monkeypatch.setattr(autotune, "cpu_share", lambda start, end, threads: 0.97)  # quiet, whatever the CI's load
    model, meta = load_weights()
    inputs = EngineInputs(model, meta, "0" * 64, "cpu", batch_size=1)
    with caplog.at_level(logging.INFO, logger="muse_fast.runtime"):
        first = create_engine("auto", inputs)
        second = create_engine("auto", inputs)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("engine auto:")]
    assert len(lines) == 2 and "measured now" in lines[0] and "cached measurement" in lines[1]
    assert isinstance(first, TorchEngine) and first.precision in ("fp32", "bf16")
    assert (second.name, second.precision) == (first.name, first.precision)


def test_auto_int8_for_a_convolutional_network_is_refused_before_any_pick(caplog):
    from muse_fast.errors import ConfigError
    from muse_fast.model.weights import load_weights
    from muse_fast.runtime.engines import EngineInputs, create_engine

    model, meta = load_weights()
    with caplog.at_level(logging.INFO, logger="muse_fast.runtime"):
        with pytest.raises(ConfigError, match="quantize only 0.4% of muse_r18"):
            create_engine("auto", EngineInputs(model, meta, "0" * 64, "cpu", batch_size=1, precision="int8"))
    assert not [r for r in caplog.records if r.getMessage().startswith("engine auto:")]
