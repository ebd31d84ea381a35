"""``--mode full``: its learning-rate schedule, precision choice and the time budget of each stage."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import annotate

import muse_fast.adapt.full as full
from muse_fast.adapt.classes import ClassesConfig
from muse_fast.adapt.full import FullConfig, lr_at, resolve_amp
from muse_fast.adapt.run import AdaptConfig, adapt
from muse_fast.errors import ConfigError


def test_lr_warms_up_then_falls_to_a_tenth():
    lrs = np.array([lr_at(s, 100, 1e-3) for s in range(100)])
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert np.all(np.diff(lrs[9:]) <= 1e-12) and lrs[-1] == pytest.approx(1e-4)


def test_amp_auto_follows_the_cpus_bf16_units(monkeypatch):
    monkeypatch.setattr(full, "cpu_bf16_units", lambda: ["amx_bf16"])
    assert resolve_amp("auto") == "bf16"
    monkeypatch.setattr(full, "cpu_bf16_units", lambda: [])
    assert resolve_amp("auto") == "none" and resolve_amp("none") == "none"
    with pytest.raises(ConfigError, match="fp16 runs on CUDA only"):
        resolve_amp("fp16")


class FakeClock:
    """``time.time()`` that moves 10 s per call: stages run out of time after a known number of steps."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def time(self) -> float:
        self.now += 10.0
        return self.now


@pytest.mark.slow  # trains on BRCA-M2C tiles: about 20 s on 2 cores
def test_each_stage_has_its_own_share_of_the_time_budget(tmp_path, brca_tiles, monkeypatch):
    """A head stage that would run for long stops at its share, and the network stage still runs."""
    monkeypatch.setattr(full, "time", FakeClock())
    images = annotate(tmp_path / "ann", brca_tiles[:2], regions=True)  # one region trains, one is held out
    cfg = FullConfig(head_steps=40, network_steps=2, batch_size=2, eval_every=1, thresholds=(0.3,), max_minutes=4)
    args = (tuple(images), tmp_path / "ann", tmp_path / "a.pt", 0.5, "full")
    report = adapt(AdaptConfig(*args, quiet=True, classes=ClassesConfig(steps=20), full=cfg))["full"]
    head = [r for r in report["log"] if r["stage"] == "head"]
    network = [r for r in report["log"] if r["stage"] == "network"]
    assert 1 <= len(head) < 40 and head[-1]["minutes"] <= 0.35 * 4 + 0.5  # stopped at its share (84 s of 240)
    assert [r["step"] for r in network] == [1, 2]
    assert set(report["held_out"]) == {"base", "head", "network"}
