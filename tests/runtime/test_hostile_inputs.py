"""Hostile weights, caches, plans, signals and streams: each attack of the outside review, recreated and refused.

Every refusal is one line with exit code 2 (or a warning and a rebuild, for caches), before any work and without
output files.
"""

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from subprocess import PIPE

import numpy as np
import pytest
import torch
from child_signals import sigint_as_a_terminal_gives_it
from dots import META, DotEngine

import muse_fast.cli as cli
from muse_fast.config import InferConfig
from muse_fast.errors import InputError, WeightsError
from muse_fast.export.cache import cache_dir
from muse_fast.model.weights import DEFAULT_WEIGHTS, load_weights
from muse_fast.runtime import autotune, bounds, seams
from muse_fast.runtime.pipeline import plan_tiles, run_slide
from muse_fast.runtime.seams import PAUSE_AT, PAUSE_DIR

DOT_CLI = str(Path(__file__).parent / "dot_cli.py")
VALID = {"format_version": 1, "model": "muse_r18", "classes": ["a", "b"], "mpp": 0.5, "tile_size": 224}


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("muse-fast: error:") and len(err.splitlines()) == 1, err
    return err


# --- weights metadata ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, says",
    [
        ({"classes": ["a", "a"]}, "name the class 'a' more than once"),
        ({"classes": [1, 2]}, "class 0 is 1 (int)"),
        ({"classes": ["a", " "]}, "class 1 is ' ' (str); every class must be a non-empty name"),
        ({"classes": []}, "must be a non-empty list of names"),
        ({"classes": "ab"}, "must be a non-empty list of names"),
        ({"classes": ["a\udc80", "b"]}, "class 0 (a\\udc80) is not valid text (a lone surrogate)"),
        ({"tile_size": 0}, "tile_size 0; it must be a multiple of 32 larger than the 32-px tile overlap"),
        ({"tile_size": 100}, "tile_size 100; it must be a multiple of 32"),
        ({"tile_size": 32}, "tile_size 32; it must be a multiple of 32 larger than the 32-px"),
        ({"tile_size": "224"}, "tile_size '224' (str); it must be an int"),
        ({"tile_size": True}, "tile_size True (bool); it must be an int"),
        ({"mpp": "0.5"}, "record mpp '0.5'; it must be the positive microns per pixel"),
        ({"mpp": float("nan")}, "record mpp nan"),
        ({"model": 7}, "record model 7; it must be a model name; choose one of: muse_vit_t16"),
        ({"config": [1]}, "a config of type list, not a dict"),
        ({"state_dict": [torch.zeros(1)] * 259}, "the state_dict is a list, not a mapping of names to tensors"),
        ({"state_dict": {"w": 1}}, "state_dict entry 'w' holds a value of type int, not a tensor"),
    ],
)
def test_hostile_weights_metadata_is_one_line(tmp_path, change, says):
    path = tmp_path / "w.pt"
    torch.save({**VALID, "state_dict": {}, **change}, path)
    with pytest.raises(WeightsError, match=re.escape(says)) as info:
        load_weights(path)
    assert len(str(info.value).splitlines()) == 1 and len(str(info.value)) < 300


def test_weights_with_a_repeated_class_are_refused_before_any_output(cmu_svs, tmp_path, capsys):
    """They wrote 283 CSV rows while the summary said 126, and an .h5ad that anndata could not open."""
    payload = torch.load(DEFAULT_WEIGHTS, weights_only=True)
    payload["classes"] = ["lymphocyte", "tumor", "tumor"]
    torch.save(payload, tmp_path / "dup.pt")
    out = tmp_path / "out"
    assert cli.main(["infer", str(cmu_svs), "--out", str(out), "--weights", str(tmp_path / "dup.pt"), "--quiet"]) == 2
    assert "name the class 'tumor' more than once" in _one_line_error(capsys)
    assert not out.exists()


def test_a_weights_folder_is_called_a_folder(small_dots, tmp_path, capsys):
    assert cli.main(["infer", str(small_dots), "--out", str(tmp_path / "o"), "--weights", str(tmp_path)]) == 2
    assert f"weights {tmp_path} is a folder" in _one_line_error(capsys)


def test_an_implausible_model_mpp_is_refused_on_load_and_warned_with_the_tile_count_in_a_run(
    small_dots, tmp_path, caplog
):
    """Weights with mpp 0.001 ran 3,891 batches without a word (only the slide's mpp was checked)."""
    for mpp in (0.001, 50.0):
        torch.save({**VALID, "mpp": mpp, "state_dict": {}}, tmp_path / "w.pt")
        with pytest.raises(WeightsError, match=f"record mpp {mpp:g}, outside the 0.1-4 um/px of real slides"):
            load_weights(tmp_path / "w.pt")
    caplog.clear()
    meta = META.__class__(META.model, META.classes, 0.05, META.tile_size)
    cfg = InferConfig(out_dir=tmp_path / "o", quiet=True, tissue_mask=False)
    with pytest.raises(RuntimeError, match="simulated crash"):  # stop at the first batch, after the warning
        run_slide(small_dots, DotEngine(fail_at_call=1), meta, cfg, {"engine": "dots"})
    tiles = bounds.grid_size(500 * 10, 400 * 10, 224, 32)  # 0.5 um/px resampled to 0.05 um/px
    (line,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "the model's 0.05 um/px (its weights) is outside the usual" in line and f"{tiles:,} tiles" in line


# --- plans that exceed the machine --------------------------------------------------------------------------------


def test_weights_mpp_0_001_on_a_real_slide_is_refused_before_planning(cmu_svs):
    from muse_fast.io.readers import open_slide

    slide = open_slide(cmu_svs)
    try:
        meta = META.__class__(META.model, META.classes, 0.001, META.tile_size)
        with pytest.raises(InputError, match=r"needs [\d,]+ tiles, more than a slide can need .*weights' mpp"):
            plan_tiles(slide, meta, 32, None)
    finally:
        slide.close()


def test_mpp_5000_is_refused_with_the_tile_count_and_nothing_written(small_dots, tmp_path, capsys, monkeypatch):
    """--mpp 5000 planned 28 M tiles and died with MemoryError at 15 GB."""
    monkeypatch.setattr(cli, "_build_engine", lambda *a, **k: (DotEngine(), META, "dots"))
    out = tmp_path / "out"
    assert cli.main(["infer", str(small_dots), "--out", str(out), "--mpp", "5000", "--no-tissue-mask"]) == 2
    tiles = bounds.grid_size(500 * 10_000, 400 * 10_000, 224, 32)
    err = _one_line_error(capsys)  # the implausible-mpp warning is left out: the refusal says the number
    assert f"needs {tiles:,} tiles" in err and "check --mpp" in err
    assert not out.exists()  # nothing written, nor the folder the refused run had created


def test_a_plan_is_limited_by_the_memory_too():
    bounds.check_tile_plan(1000, "s.svs", 0.5, 0.5, ram_bytes=2**30)
    with pytest.raises(InputError, match=r"needs 300,000 tiles, more than a slide can need \(at most 262,144 here\)"):
        bounds.check_tile_plan(300_000, "s.svs", 0.5, 0.5, ram_bytes=2**30)


def test_workers_are_capped_with_one_line(tmp_path, caplog):
    """--workers 100000 with cuCIM stalled at 32k threads and ignored SIGTERM and SIGINT."""
    cfg = InferConfig(out_dir=tmp_path, workers=100_000)
    assert cfg.workers == min(4 * len(os.sched_getaffinity(0)), 64)
    (record,) = caplog.records
    assert "--workers 100000 is more reader threads than this machine can use; using" in record.getMessage()
    assert InferConfig(out_dir=tmp_path, workers=2).workers == 2 and len(caplog.records) == 1


# --- signals at every stage ---------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "step, signum, code",
    [("start", signal.SIGINT, 130), ("plan", signal.SIGTERM, 143), ("shard:0", signal.SIGINT, 130)]
    + [("staged", signal.SIGTERM, 143)],
)
def test_a_signal_at_any_stage_stops_the_run_without_final_outputs(small_dots, tmp_path, step, signum, code):
    seams_dir, out = tmp_path / "seams", tmp_path / "out"
    seams_dir.mkdir()
    env = {**os.environ, PAUSE_AT: step, PAUSE_DIR: str(seams_dir)}
    cmd = [sys.executable, DOT_CLI, "infer", str(small_dots), "--out", str(out), "--no-tissue-mask", "--quiet"]
    cmd += ["--batch-size", "2", "--workers", "1000"]
    run = subprocess.Popen(cmd, env=env, stdout=PIPE, stderr=PIPE, text=True, preexec_fn=sigint_as_a_terminal_gives_it)
    marker = seams_dir / f"{step}.{run.pid}.paused"
    while not marker.exists():  # the seam writes it when the run reaches the step
        assert run.poll() is None, run.communicate()
        threading.Event().wait(0.02)
    run.send_signal(signum)
    _, err = run.communicate(timeout=60)  # the seam would wait 120 s for its go file: the signal ends it
    assert run.returncode == code, err
    assert err.strip().splitlines()[-1].startswith("muse-fast: " + ("interrupted" if code == 130 else "terminated"))
    if step in ("start", "plan"):  # nothing to resume yet: the folder the run created is gone again
        assert not out.exists()
        return
    assert not [p.name for p in out.iterdir() if not p.name.startswith(".")]  # no final output; resumable shards
    assert not list(out.glob(".*.partial")) or step in ("shard:0", "staged")


# --- caches -------------------------------------------------------------------------------------------------------


def _choose(monkeypatch, speeds):
    quiet = lambda engines, batch, rounds=3: autotune.Measurement({k: speeds[k] for k in engines}, 1.0)  # noqa: E731
    monkeypatch.setattr(autotune, "measure", quiet)
    candidates = [autotune.Candidate("torch", "fp32"), autotune.Candidate("onnx", "fp32")]
    key = {"machine": {"cpu": "x"}, "model": {"weights_sha256": "a" * 64}}
    return autotune.choose(candidates, lambda c: object(), key, np.zeros((1, 4, 4, 3), np.uint8), {})


def _read_in_thread(fn, timeout: float = 30):
    """``fn()`` in a thread; a read that blocks (a FIFO) fails the test instead of hanging it."""
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("value", fn()), daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "the cache read blocked"
    return result["value"]


@pytest.mark.parametrize(
    "speeds, why",
    [
        ({"torch fp32": "fast", "onnx fp32": 1.0}, "tiles/s that are not positive numbers"),
        ({"torch fp32": float("nan"), "onnx fp32": 1.0}, "tiles/s that are not positive numbers"),
        ({"torch fp32": True, "onnx fp32": 1.0}, "tiles/s that are not positive numbers"),
        ({"torch fp32": 99.0, "onnx fp32": 1.0}, "it fails its checksum"),  # edited by hand: torch would win
    ],
)
def test_a_wrong_autotune_entry_is_ignored_named_and_replaced(tmp_path, monkeypatch, caplog, speeds, why):
    """A non-numeric speed gave a traceback on every --engine auto run, without naming the file."""
    monkeypatch.setenv("MUSE_FAST_CACHE", str(tmp_path))
    first, _ = _choose(monkeypatch, {"torch fp32": 10.0, "onnx fp32": 20.0})
    entry = json.loads(first.cache_path.read_text())
    first.cache_path.write_text(json.dumps({**entry, "tiles_per_s": speeds}))
    again, _ = _choose(monkeypatch, {"torch fp32": 10.0, "onnx fp32": 20.0})
    assert not again.cached and again.candidate.label == "onnx fp32"
    (line,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert line == f"engine auto: ignoring the cached measurement {first.cache_path} ({why}); measuring again"
    assert _choose(monkeypatch, {})[0].cached  # replaced by a valid entry


@pytest.mark.parametrize("kind", ["fifo", "dev_zero_link"])
def test_special_files_at_the_autotune_cache_path_are_ignored_not_read(tmp_path, monkeypatch, caplog, kind):
    """A FIFO there blocked every --engine auto run forever; a /dev/zero symlink ended in MemoryError."""
    monkeypatch.setenv("MUSE_FAST_CACHE", str(tmp_path))
    path = _choose(monkeypatch, {"torch fp32": 10.0, "onnx fp32": 20.0})[0].cache_path
    path.unlink()
    os.mkfifo(path) if kind == "fifo" else path.symlink_to("/dev/zero")
    choice, _ = _read_in_thread(lambda: _choose(monkeypatch, {"torch fp32": 10.0, "onnx fp32": 20.0}))
    assert not choice.cached
    found = "a FIFO (named pipe)" if kind == "fifo" else "a symbolic link"
    assert f"{path} in the cache is {found}, not a file of ours; ignoring it" in caplog.text
    assert path.is_file() and not path.is_symlink() and _choose(monkeypatch, {})[0].cached  # replaced, link only


@pytest.mark.parametrize("value", ["", "relative/cache"])
def test_an_empty_or_relative_xdg_cache_home_counts_as_unset(monkeypatch, tmp_path, value):
    """XDG_CACHE_HOME="" wrote the cache into the working folder."""
    monkeypatch.delenv("MUSE_FAST_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", value)
    assert cache_dir() == tmp_path / ".cache" / "muse-fast"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "muse-fast"


# --- tracebacks that are now one line -----------------------------------------------------------------------------


def test_a_cohort_row_shorter_than_its_header_is_one_line(small_dots, tmp_path, capsys):
    listing = tmp_path / "cohort.csv"
    listing.write_text(f"mpp,path\n0.5,{small_dots}\n0.5\n")
    assert cli.main(["infer", str(listing), "--out", str(tmp_path / "o")]) == 2
    assert "cohort.csv line 3 has no path (a row shorter than the header" in _one_line_error(capsys)


def test_a_cohort_mpp_of_1e_300_is_called_implausible(small_dots, tmp_path, capsys):
    listing = tmp_path / "cohort.csv"
    listing.write_text(f"path,mpp\n{small_dots},1e-300\n")
    assert cli.main(["infer", str(listing), "--out", str(tmp_path / "o")]) == 2
    assert "line 2: mpp 1e-300 is an implausible resolution" in _one_line_error(capsys)
    assert cli.main(["infer", str(small_dots), "--out", str(tmp_path / "o"), "--mpp", "1e-300"]) == 2
    assert "--mpp 1e-300 is an implausible resolution" in _one_line_error(capsys)


def test_a_slide_name_too_long_for_its_outputs_is_blamed_not_out(small_dots, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "_build_engine", lambda *a, **k: (DotEngine(), META, "dots"))
    slide = tmp_path / ("s" * 230 + ".tif")
    slide.write_bytes(small_dots.read_bytes())
    assert cli.main(["infer", str(slide), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = _one_line_error(capsys)
    assert "the slide name ssss" in err and "is too long for its output names" in err and "--out" not in err
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


def test_bench_refuses_a_negative_max_batches(small_dots, capsys):
    assert cli.main(["bench", str(small_dots), "--max-batches", "-1"]) == 2
    assert "--max-batches must be 0 (all) or more, got -1" in _one_line_error(capsys)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
@pytest.mark.parametrize("command", ["models", "info"])
def test_results_into_a_full_stdout_are_one_line(command):
    with open("/dev/full", "w") as full:
        run = subprocess.run([sys.executable, "-m", "muse_fast", command], stdout=full, stderr=subprocess.PIPE)
    err = run.stderr.decode().strip()
    assert run.returncode == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("muse-fast: error: cannot write the result to standard output (No space left on device)")


def test_quiet_silences_python_warnings_and_torch_log_lines(small_dots, tmp_path, monkeypatch):
    """Under --quiet, torch's exporter still printed its warnings."""
    monkeypatch.setattr(cli, "_build_engine", lambda *a, **k: (DotEngine(), META, "dots"))
    seen = []

    def noisy(step: str) -> None:
        if step == "plan":
            seen.append(logging.getLogger("torch.onnx").isEnabledFor(logging.WARNING))
            warnings.warn("a library warning", UserWarning, stacklevel=2)

    monkeypatch.setattr(seams, "HOOK", noisy)
    for quiet, out in ((True, "q"), (False, "loud")):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            args = ["infer", str(small_dots), "--out", str(tmp_path / out), "--no-tissue-mask"]
            assert cli.main(args + (["--quiet"] if quiet else [])) == 0
        assert [str(w.message) for w in caught if "library" in str(w.message)] == (
            [] if quiet else ["a library warning"]
        )
    assert seen == [False, True]
    assert logging.getLogger("torch.onnx").isEnabledFor(logging.WARNING)  # restored after the run


def test_a_compiled_package_that_fails_its_checksum_is_rebuilt(tmp_path, monkeypatch, caplog):
    """The compiled network's package is cached like the ONNX model (the build and load are stand-ins here: the
    real ones take a minute of inductor; tests/runtime/test_compiled.py runs them)."""
    from muse_fast.runtime import compiled
    from muse_fast.runtime.engines import EngineInputs

    monkeypatch.setenv("MUSE_FAST_CACHE", str(tmp_path))
    builds = []
    monkeypatch.setattr(compiled, "build_package", lambda net, example, path: builds.append(path.write_bytes(b"pt2")))
    monkeypatch.setattr(compiled, "load_package", lambda path: path.read_bytes())
    model, meta = load_weights()
    inputs = EngineInputs(model, meta, "0" * 64, "cpu", batch_size=1, precision="fp32")
    first = compiled.CompiledEngine(inputs)
    assert first.compiled_now and not compiled.CompiledEngine(inputs).compiled_now and len(builds) == 1
    first.path.write_bytes(b"pT2")
    again = compiled.CompiledEngine(inputs)
    assert again.compiled_now and len(builds) == 2 and again.runner == b"pt2"
    assert f"cached compiled network {first.path}: it fails its checksum; rebuilding it" in caplog.text


def test_a_resolution_finer_than_microscopes_sample_and_an_empty_out_are_refused(small_dots, tmp_path, capsys):
    """--mpp 0.0011 passed the old 0.001 floor and asked 29 GiB for one tile, reported as damaged image data; an empty
    --out wrote into the current folder."""
    assert cli.main(["infer", str(small_dots), "--out", str(tmp_path / "o"), "--mpp", "0.0011"]) == 2
    assert "--mpp 0.0011 is an implausible resolution (below 0.05 microns per pixel" in _one_line_error(capsys)
    assert not (tmp_path / "o").exists()
    assert cli.main(["infer", str(small_dots), "--out", ""]) == 2
    assert _one_line_error(capsys) == "muse-fast: error: --out is empty; give a file or folder name"
