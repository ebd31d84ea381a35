"""The CPU engines' malloc tuning (muse_fast/runtime/memory.py): large buffers are reused, not page-faulted afresh
on every batch, and the network's outputs are bit-identical to glibc's defaults (the reference path)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).parent


def _child(image: Path, out: Path, malloc: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MUSE_FAST_MALLOC"}
    if malloc:
        env["MUSE_FAST_MALLOC"] = malloc
    done = subprocess.run(
        [sys.executable, str(HERE / "malloc_child.py"), str(image), str(out)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc: Linux only")
def test_tuned_malloc_reuses_large_buffers_and_keeps_the_outputs(brca_dir, tmp_path):
    image = sorted((brca_dir / "images").glob("*.png"))[0]
    tuned = _child(image, tmp_path / "tuned.npz", None)
    system = _child(image, tmp_path / "system.npz", "system")
    if tuned["state"] == "unavailable":
        pytest.skip("not glibc: nothing is tuned")
    assert tuned["state"] == "tuned" and system["state"] == "system"
    # glibc's default maps a 64 MB block afresh each time: 16,384 pages, each faulted when first written
    assert system["faults_per_64mb_buffer"] > 8000
    assert tuned["faults_per_64mb_buffer"] < 100
    assert tuned["repeat_equal"] and system["repeat_equal"]  # reused (dirty) buffers change nothing
    a, b = np.load(tmp_path / "tuned.npz"), np.load(tmp_path / "system.npz")
    assert np.array_equal(a["centre"], b["centre"]) and np.array_equal(a["fmap"], b["fmap"])
