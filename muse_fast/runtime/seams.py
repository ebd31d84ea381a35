"""Test seams: named steps of a slide run at which a test can pause the process or raise (style rule 20).

Steps, in order: ``start`` (before the lock), ``lock`` (lock held, nothing written), ``plan`` (tiles planned, no
batch run), ``shard:<i>`` (batch i checkpointed), ``staged`` (every output complete under its temporary name),
``rename:<suffix>`` (before each output is renamed to ``<stem>.<suffix>``), ``manifest`` (all outputs final, before
the manifest), ``cleanup`` (manifest written, before the shards are removed).

- In the process: :data:`HOOK` is called with each step's name; a test replaces it (e.g. to raise KeyboardInterrupt).
- Every step first raises an interrupt that Python lost in a garbage-collection callback (:mod:`.interrupts`).
- Across processes: with ``MUSE_FAST_PAUSE_AT=step[,step...]`` and ``MUSE_FAST_PAUSE_DIR=DIR``, a process reaching a
  listed step creates ``DIR/<step>.<pid>.paused`` and waits until the test creates ``DIR/<step>.<pid>.go``
  (at most ``MUSE_FAST_PAUSE_TIMEOUT`` seconds, default 120, then it raises).

Without those variables a step costs one environment lookup.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from .interrupts import raise_if_lost

PAUSE_AT, PAUSE_DIR, PAUSE_TIMEOUT = "MUSE_FAST_PAUSE_AT", "MUSE_FAST_PAUSE_DIR", "MUSE_FAST_PAUSE_TIMEOUT"


def _no_hook(step: str) -> None:
    return None


HOOK: Callable[[str], None] = _no_hook


def seam(step: str) -> None:
    """Mark that the run reached ``step``: raise a lost interrupt, call :data:`HOOK`, and pause here if the
    environment asks for it."""
    raise_if_lost()
    HOOK(step)
    wanted = os.environ.get(PAUSE_AT)
    if wanted and step in wanted.split(","):
        _pause(step)


def _pause(step: str) -> None:
    folder = Path(os.environ[PAUSE_DIR])
    name = f"{step}.{os.getpid()}"
    (folder / f"{name}.paused").touch()
    deadline = time.monotonic() + float(os.environ.get(PAUSE_TIMEOUT, "120"))
    while not (folder / f"{name}.go").exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"test seam: nobody released step {step!r} ({folder / name}.go)")
        time.sleep(0.01)
