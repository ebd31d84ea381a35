"""Ctrl-C that Python drops: a KeyboardInterrupt raised inside a garbage-collection callback is printed as "Exception
ignored" and lost. A run then went on to the end and exited 0 with every file written; now it stops at its next
step as an interrupted run (exit 130, no output under a final name, finished batches kept)."""

import signal
import sys
import weakref

import numpy as np
import pytest
from PIL import Image

from muse_fast.cli import EXIT_INTERRUPTED, main
from muse_fast.runtime import interrupts, seams


class _Collected:
    """An object whose collection runs a callback, as pyarrow's and tempfile's do during a run."""


@pytest.fixture
def ctrl_c_as_a_terminal_gives_it():
    """A test run started in the background has SIGINT ignored; a terminal's Ctrl-C raises KeyboardInterrupt."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
    interrupts.clear()


def _image(tmp_path):
    path = tmp_path / "tissue.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(60, 230, (300, 300, 3), dtype=np.uint8)).save(path)
    return path


def _lose_an_interrupt_at(step_wanted: str):
    def hook(step: str) -> None:
        if step == step_wanted:
            thing = _Collected()
            weakref.finalize(thing, signal.raise_signal, signal.SIGINT)  # Ctrl-C lands in the callback
            del thing  # collected now: the KeyboardInterrupt raised in the callback is dropped

    return hook


@pytest.mark.parametrize("step", ["plan", "staged"])
def test_an_interrupt_lost_in_a_collection_callback_still_stops_the_run(
    tmp_path, monkeypatch, capsys, ctrl_c_as_a_terminal_gives_it, step
):
    lost = []
    monkeypatch.setattr(sys, "unraisablehook", lambda info: lost.append(info.exc_type))
    monkeypatch.setattr(seams, "HOOK", _lose_an_interrupt_at(step))
    out = tmp_path / "out"
    argv = ["infer", str(_image(tmp_path)), "--out", str(out), "--mpp", "0.5", "--engine", "torch", "--quiet"]
    assert main(argv) == EXIT_INTERRUPTED
    assert lost == [KeyboardInterrupt]  # Python did drop it
    assert "interrupted" in capsys.readouterr().err
    assert not [p for p in out.iterdir() if p.name.startswith("tissue.")]  # nothing under a final name
    monkeypatch.setattr(seams, "HOOK", lambda step: None)
    assert main(argv) == 0  # the rerun finishes (from the kept batches)
    assert (out / "tissue.csv").is_file() and interrupts.lost() is None


def test_an_interrupt_lost_after_the_last_step_is_still_an_interrupted_command(
    tmp_path, monkeypatch, capsys, ctrl_c_as_a_terminal_gives_it
):
    """The files are final by then; the command still says it was interrupted instead of exiting 0."""
    lost = []
    monkeypatch.setattr(sys, "unraisablehook", lambda info: lost.append(info.exc_type))
    monkeypatch.setattr(seams, "HOOK", _lose_an_interrupt_at("cleanup"))
    out = tmp_path / "out"
    argv = ["infer", str(_image(tmp_path)), "--out", str(out), "--mpp", "0.5", "--engine", "torch", "--quiet"]
    assert main(argv) == EXIT_INTERRUPTED and lost == [KeyboardInterrupt]
    assert (out / "tissue.csv").is_file() and (out / "tissue.manifest.json").is_file()
