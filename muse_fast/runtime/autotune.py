"""``--engine auto`` on the CPU: time every engine and precision that passed the accuracy gate, keep the fastest.

Which engine is fastest depends on the CPU (ONNX Runtime fp32 was 1.44x torch on an AMD EPYC and 0.9-1.15x on an
Intel Xeon; bf16 wins only with bf16 units), so it is measured: one warm-up batch per candidate, then
``CALIBRATION_ROUNDS`` interleaved rounds of one batch each (so machine load affects every candidate alike), the
median counting. The result is cached per machine (CPU model, flags, cores, threads), model (weights, batch size)
and version (muse-fast, torch, ONNX Runtime) in ``<cache>/autotune/``; any change means a new measurement.

A measurement taken on a busy machine is not cached: while timing, this process must get at least ``BUSY_SHARE`` of
the CPU time its threads could use (CPU seconds over wall seconds times threads, capped at the usable cores); below
that, other work took the CPU, the speeds say more about the load than about the engines, and the choice serves this
run only. ``MUSE_FAST_RETUNE=1`` measures again and replaces the cached entry (if the machine is quiet).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from muse_fast.errors import ConfigError

from .bounds import usable_cpus
from .precision import cpu_bf16_units, cpu_flags, cpu_flags_digest, cpu_model_name

log = logging.getLogger(__name__)

AUTOTUNE_VERSION = 2  # bump when candidates or the measurement change; 2: busy measurements are not cached
CALIBRATION_ROUNDS = 3
BUSY_SHARE = 0.7  # 2-core AMX Xeon: quiet timings got 0.92-0.99, timings beside other busy processes 0.33-0.62
RETUNE_ENV = "MUSE_FAST_RETUNE"


@dataclass(frozen=True)
class Candidate:
    engine: str
    precision: str

    @property
    def label(self) -> str:
        return f"{self.engine} {self.precision}"


@dataclass(frozen=True)
class AutoChoice:
    candidate: Candidate
    tiles_per_s: dict[str, float]  # label -> measured model-only tiles/s (empty: nothing to choose between)
    cached: bool  # read from the cache, not measured now
    cache_path: Path | None
    machine: dict = field(default_factory=dict)
    not_kept: str = ""  # why a measurement made now is not cached (a busy machine, an unusable cache folder)

    def line(self) -> str:
        """One line: what was picked and why."""
        label = self.candidate.label
        if not self.tiles_per_s:
            return f"engine auto: {label}, the only candidate for --precision {self.candidate.precision}"
        others = sorted(((v, k) for k, v in self.tiles_per_s.items() if k != label), reverse=True)
        bf16 = " and ".join(self.machine.get("bf16_units", [])) or "no bf16 units"
        threads = self.machine.get("threads", 0)
        where = f"{self.machine.get('cpu', 'this CPU')} with {bf16}, {threads} thread{'s' if threads != 1 else ''}"
        if self.not_kept or self.cache_path is None:
            when = f"measured now, for this run only: {self.not_kept or 'the cache folder is unusable'}"
        else:
            when = f"{'cached measurement' if self.cached else 'measured now, cached'} in {self.cache_path}"
        return (
            f"engine auto: {label}, the fastest at {self.tiles_per_s[label]:.1f} tiles/s"
            + (" (" + ", ".join(f"{k} {v:.1f}" for v, k in others) + ")" if others else "")
            + f" on {where}; {when}"
        )


def cpu_candidates(
    precision: str, onnx_available: bool, bf16_units: list[str], int8_useful: bool = True, compiler: bool = False
) -> list[Candidate]:
    """The engine/precision pairs that passed the accuracy gate (docs/results.md) and fit ``precision``.

    bf16 is a candidate only on CPUs with bf16 units (elsewhere it is emulated and never wins); int8 only where
    dynamic quantization covers enough of the network (``int8_useful``; not for convolutional ones). With a C++
    ``compiler``, the compiled engine at one precision (bf16 where there are bf16 units, else fp32; each costs a
    compile on first use).
    """
    pool = [Candidate("torch", "fp32")]
    if bf16_units:
        pool.append(Candidate("torch", "bf16"))
    compiled = precision if precision in ("fp32", "bf16") else "bf16" if bf16_units else "fp32"
    if compiler and (compiled == "fp32" or bf16_units):
        pool.append(Candidate("compiled", compiled))
    if onnx_available:
        pool += [Candidate("onnx", "fp32")] + ([Candidate("onnx", "int8")] if int8_useful else [])
    if precision == "auto":
        return pool
    fitting = [c for c in pool if c.precision == precision]
    # none here: the engine that offers it will say why it cannot run
    return fitting or [Candidate("onnx" if precision == "int8" else "torch", precision)]


def machine_key(threads: int) -> dict:
    """What makes timings of this machine comparable: the CPU, its flags, its cores and the threads used."""
    flags = cpu_flags()
    return {
        "cpu": cpu_model_name(),
        "flags_sha256": cpu_flags_digest(flags),
        "bf16_units": cpu_bf16_units(flags),
        "logical_cpus": os.cpu_count(),
        "threads": threads,
    }


def versions() -> dict:
    import importlib.metadata as md

    import torch

    from .. import __version__

    try:
        ort = md.version("onnxruntime")
    except md.PackageNotFoundError:
        ort = None
    return {"muse_fast": __version__, "torch": torch.__version__, "onnxruntime": ort, "autotune": AUTOTUNE_VERSION}


def cache_path(key: dict) -> Path:
    from muse_fast.export.cache import cache_dir, digest

    return cache_dir() / "autotune" / f"{digest(key)[:24]}.json"


def read_cached(path: Path, key: dict) -> dict | None:
    """The cached timings for ``key``, or None (missing, or written for another key).

    A file that is no regular file (a FIFO, a device, a symlink), is damaged, fails its checksum or holds speeds that
    are not positive numbers is ignored with one warning naming it, and measured again (which replaces it).
    """
    from muse_fast.export.cache import read_regular

    raw = read_regular(path, limit=1 << 20)
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:  # also UnicodeDecodeError
        data = None
    why = _bad_entry(data)
    if why:
        log.warning("engine auto: ignoring the cached measurement %s (%s); measuring again", path, why)
        return None
    return data if data["key"] == key else None


def cache_entry(key: dict, speeds: dict[str, float], choice: str) -> dict:
    """What the cache file holds: the key, the speeds, the choice, and a checksum over them."""
    entry = {"key": key, "tiles_per_s": speeds, "choice": choice}
    return {**entry, "sha256": _entry_sum(entry)}


def _entry_sum(entry: dict) -> str:
    return hashlib.sha256(json.dumps(entry, sort_keys=True).encode()).hexdigest()


def _bad_entry(data: object) -> str | None:
    """Why a parsed cache file is not a valid entry, or None."""
    if not isinstance(data, dict) or not {"key", "tiles_per_s", "choice"} <= set(data):
        return "not a muse-fast measurement"
    if "sha256" not in data:
        return "no checksum: written by an earlier version"
    speeds = data["tiles_per_s"]
    if not isinstance(speeds, dict) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < float("inf") for v in speeds.values()
    ):
        return "tiles/s that are not positive numbers"
    if data["sha256"] != _entry_sum({k: data[k] for k in ("key", "tiles_per_s", "choice")}):
        return "it fails its checksum"
    return None


@dataclass(frozen=True)
class Measurement:
    tiles_per_s: dict[str, float]  # label -> median model-only tiles/s
    cpu_share: float  # CPU time this process got while timing, over what its threads could use (1.0: all of it)


def cpu_clock() -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads): sampled around the timed rounds."""
    return time.perf_counter(), time.process_time()


def cpu_share(start: tuple[float, float], end: tuple[float, float], threads: int) -> float:
    """CPU seconds over wall seconds times the threads that can run at once (at most the usable cores)."""
    wall, cpu = end[0] - start[0], end[1] - start[1]
    return cpu / max(wall * max(1, min(threads, usable_cpus())), 1e-9)


def busy_reason(share: float) -> str:
    """Why a measurement at this CPU share is not cached, or ""."""
    if share >= BUSY_SHARE:
        return ""
    return (
        f"the CPU was busy (this process got {share:.0%} of its threads' CPU time while timing, under "
        f"{BUSY_SHARE:.0%}); a run on a quiet machine caches its measurement"
    )


def measure(engines: dict[str, object], batch: np.ndarray, rounds: int = CALIBRATION_ROUNDS) -> Measurement:
    """Median model-only tiles/s of each engine over ``rounds`` interleaved runs of ``batch``, after a warm-up, and
    this process's CPU share during those rounds."""
    import torch

    for engine in engines.values():
        engine.run(batch)
    times: dict[str, list[float]] = {label: [] for label in engines}
    before = cpu_clock()
    for _ in range(rounds):
        for label, engine in engines.items():
            start = time.perf_counter()
            engine.run(batch)
            times[label].append(time.perf_counter() - start)
    share = cpu_share(before, cpu_clock(), torch.get_num_threads())
    return Measurement({label: round(len(batch) / statistics.median(t), 2) for label, t in times.items()}, share)


def calibration_batch(batch_size: int, tile_size: int) -> np.ndarray:
    """A fixed pseudo-random batch: the networks' run time does not depend on the pixel values."""
    rng = np.random.default_rng(18)
    return rng.integers(0, 256, (batch_size, tile_size, tile_size, 3), dtype=np.uint8)


def choose(
    candidates: list[Candidate],
    build: Callable[[Candidate], object],
    key: dict,
    batch: np.ndarray,
    machine: dict,
) -> tuple[AutoChoice, object | None]:
    """The fastest candidate (cached for ``key``, else measured now) and its engine if it was built here.

    A candidate that cannot be built here is skipped with its reason; if none can, the first one's error is raised.
    With ``$MUSE_FAST_RETUNE`` set (not "0") the cache is not read; a measurement on a busy machine is not written.
    """
    from muse_fast.export.cache import write_atomic

    from ..errors import one_line

    if len(candidates) == 1:
        return AutoChoice(candidates[0], {}, False, None, machine), None
    key = {**key, "candidates": [c.label for c in candidates]}
    path = cache_path(key)
    labels = {c.label: c for c in candidates}
    cached = None if os.environ.get(RETUNE_ENV, "0") not in ("", "0") else read_cached(path, key)
    if cached is not None and cached["tiles_per_s"] and set(cached["tiles_per_s"]) <= set(labels):
        speeds = cached["tiles_per_s"]
        return AutoChoice(labels[max(speeds, key=speeds.get)], speeds, True, path, machine), None
    engines, first_error = {}, None
    for candidate in candidates:
        try:
            engines[candidate.label] = build(candidate)
        except Exception as exc:  # noqa: BLE001 - a candidate that cannot run here is not a choice
            first_error = first_error or exc
            log.info("engine auto: skipping %s (%s)", candidate.label, one_line(exc))
    if not engines:
        raise first_error
    measured = measure(engines, batch)
    speeds = measured.tiles_per_s
    best = max(speeds, key=speeds.get)
    not_kept = busy_reason(measured.cpu_share)
    if not_kept:
        path = None
    else:
        try:
            write_atomic(path, (json.dumps(cache_entry(key, speeds, best), indent=2) + "\n").encode())
        except ConfigError as exc:  # the choice stands; only its cache is lost
            log.warning("engine auto: %s; the measurement is not kept", exc)
            path = None
    return AutoChoice(labels[best], speeds, False, path, machine, not_kept), engines[best]


def auto_cpu_engine(inputs, build: Callable[[Candidate], object], onnx_available: bool):
    """``--engine auto`` on the CPU (see the module's doc); logs the one line of :meth:`AutoChoice.line`."""
    import torch

    from muse_fast.export.quantize import MIN_DYNAMIC_INT8_SHARE, check_dynamic_int8, dynamic_int8_share

    if inputs.precision == "int8":  # refused before a pick is announced
        check_dynamic_int8(inputs.model, inputs.meta.model)
    from .compiled import compiler_missing_reason

    int8_useful = dynamic_int8_share(inputs.model) >= MIN_DYNAMIC_INT8_SHARE
    machine = machine_key(torch.get_num_threads())
    if no_compiler := compiler_missing_reason():
        log.debug("no compiled candidate for --engine auto (%s)", no_compiler)  # its one line names what it timed
    candidates = cpu_candidates(inputs.precision, onnx_available, machine["bf16_units"], int8_useful, not no_compiler)
    model = {
        "name": inputs.meta.model,
        "weights_sha256": inputs.weights_sha256,
        "tile_size": inputs.meta.tile_size,
        "batch_size": inputs.batch_size,
    }
    key = {"machine": machine, "model": model, "versions": versions(), "precision": inputs.precision}
    batch = calibration_batch(inputs.batch_size, inputs.meta.tile_size)
    choice, engine = choose(candidates, build, key, batch, machine)
    log.info("%s", choice.line())
    return engine if engine is not None else build(choice.candidate)
