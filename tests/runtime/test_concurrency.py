"""Real processes on one output folder: two runs interleaved at every step, SIGKILL and SIGTERM at chosen steps.

Processes run ``dot_cli.py`` (``muse-fast infer`` with the dot engine) and pause at named steps through the test seam
of :mod:`muse_fast.runtime.seams`: a paused process writes a marker file and waits for the test's ``go`` file.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dot_cli import build_dot_engine

import muse_fast.cli as cli
from muse_fast.runtime.seams import PAUSE_AT, PAUSE_DIR

DOT_CLI = str(Path(__file__).parent / "dot_cli.py")
STEPS = ["lock", "shard:0", "shard:2", "staged", "rename:geojson", "rename:csv", "manifest", "cleanup"]
ARGS = ["--no-tissue-mask", "--batch-size", "2", "--quiet"]


def _start(slide: Path, out: Path, seams: Path | None = None, steps: list[str] = ()) -> subprocess.Popen:
    env = dict(os.environ)
    if steps:
        env.update({PAUSE_AT: ",".join(steps), PAUSE_DIR: str(seams)})
    cmd = [sys.executable, DOT_CLI, "infer", str(slide), "--out", str(out), *ARGS]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_paused(proc: subprocess.Popen, seams: Path, step: str, timeout: float = 120) -> None:
    marker = seams / f"{step}.{proc.pid}.paused"
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"exited {proc.returncode} before reaching {step}: {proc.stderr.read()}")
        assert time.monotonic() < deadline, f"{step} not reached in {timeout} s"
        time.sleep(0.02)


def _release(proc: subprocess.Popen, seams: Path, step: str) -> None:
    (seams / f"{step}.{proc.pid}.go").touch()


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err.strip()


def _outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def reference(small_dots, tmp_path_factory):
    """The outputs of one undisturbed CLI run (in this process: same engine, same fingerprint)."""
    out = tmp_path_factory.mktemp("reference")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cli, "_build_engine", build_dot_engine)
        assert cli.main(["infer", str(small_dots), "--out", str(out), *ARGS]) == 0
    return _outputs(out)


def test_a_second_run_fails_with_one_line_at_every_step_of_the_first(small_dots, reference, tmp_path):
    """Issue 13.1: two runs into one --out shared temp names and shards; one corrupted the other's output."""
    seams, out = tmp_path / "seams", tmp_path / "out"
    seams.mkdir()
    first = _start(small_dots, out, seams, STEPS)
    for step in STEPS:
        _wait_paused(first, seams, step)
        code, err = _finish(_start(small_dots, out))
        assert code == 2, err
        assert err.startswith("muse-fast: error:") and len(err.splitlines()) == 1, err
        assert f"pid {first.pid}" in err and "another --out" in err
        _release(first, seams, step)
    code, err = _finish(first)
    assert code == 0, err
    assert _outputs(out) == reference  # valid, complete and identical to a single run; nothing hidden left


def test_a_run_that_starts_while_another_finishes_skips_the_slide(small_dots, reference, tmp_path):
    seams, out = tmp_path / "seams", tmp_path / "out"
    seams.mkdir()
    late = _start(small_dots, out, seams, ["start"])
    _wait_paused(late, seams, "start")
    code, err = _finish(_start(small_dots, out))
    assert code == 0 and "nuclei" in err, err
    _release(late, seams, "start")
    code, err = _finish(late)
    assert code == 0 and err.endswith("skipped"), err
    assert _outputs(out) == reference


def test_sigkill_at_any_phase_is_completed_by_the_next_run(small_dots, reference, tmp_path):
    """Issue 13.3: SIGKILL once ``<stem>.csv`` appeared lost the overlay for good and left temp files."""
    seams, out = tmp_path / "seams", tmp_path / "out"
    seams.mkdir()
    for step in ("shard:1", "rename:csv", "cleanup"):
        run = _start(small_dots, out, seams, [step])
        _wait_paused(run, seams, step)
        run.kill()
        run.wait(timeout=60)
    assert (out / ".dots.partial").is_dir()  # the shards, which only the manifest's owner removes
    code, err = _finish(_start(small_dots, out))
    assert code == 0 and err.endswith("skipped"), err  # the run killed at "cleanup" had written the manifest
    assert _outputs(out) == reference
    for path in out.glob("dots.*"):  # all of them: outputs that no manifest lists would be the user's, not ours
        path.unlink()
    run = _start(small_dots, out, seams, ["rename:csv"])  # a kill between the renames, then a complete rerun
    _wait_paused(run, seams, "rename:csv")
    run.kill()
    run.wait(timeout=60)
    assert (out / f".dots.csv.{run.pid}.partial").is_file() and not (out / "dots.csv").exists()
    code, err = _finish(_start(small_dots, out))
    assert code == 0 and "nuclei" in err, err
    assert _outputs(out) == reference


def test_sigterm_is_handled_like_ctrl_c(small_dots, reference, tmp_path):
    """Issue 13.6: SIGTERM exited 143 without a word."""
    seams, out = tmp_path / "seams", tmp_path / "out"
    seams.mkdir()
    run = _start(small_dots, out, seams, ["shard:1"])
    _wait_paused(run, seams, "shard:1")
    run.send_signal(signal.SIGTERM)
    code, err = _finish(run)
    assert code == 143, err
    assert err == "muse-fast: terminated (SIGTERM); a rerun with the same --out continues from any finished batches"
    assert sorted(p.name for p in out.iterdir()) == [".dots.partial"]
    assert len(list((out / ".dots.partial").glob("batch_*.npz"))) == 2
    code, err = _finish(_start(small_dots, out))
    assert code == 0 and "2 batches resumed" in err, err
    assert _outputs(out) == reference
