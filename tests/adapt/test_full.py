"""``--mode full``: its learning-rate schedule, precision choice and the time budget of each stage."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import annotate

import muse_fast.adapt.full as full
import muse_fast.train.amp as amp_module
from muse_fast.adapt.classes import ClassesConfig
from muse_fast.adapt.full import FullConfig, choose_threshold, lr_at, threshold_grid
from muse_fast.adapt.run import AdaptConfig, adapt
from muse_fast.errors import ConfigError
from muse_fast.train.amp import resolve_amp


def test_lr_warms_up_then_falls_to_a_tenth():
    lrs = np.array([lr_at(s, 100, 1e-3) for s in range(100)])
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert np.all(np.diff(lrs[9:]) <= 1e-12) and lrs[-1] == pytest.approx(1e-4)


def test_amp_auto_follows_the_cpus_bf16_units(monkeypatch):
    monkeypatch.setattr(amp_module, "cpu_bf16_units", lambda: ["amx_bf16"])
    assert resolve_amp("auto") == "bf16"
    monkeypatch.setattr(amp_module, "cpu_bf16_units", lambda: [])
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


def test_the_threshold_grid_grows_upward_only_while_its_top_is_best():
    assert threshold_grid((0.2, 0.25, 0.3), 0.3, 0.9) == pytest.approx(0.35)
    assert threshold_grid((0.2, 0.25, 0.3), 0.25, 0.9) is None
    assert threshold_grid((0.8, 0.85, 0.9), 0.9, 0.9) is None


def test_choose_threshold_extends_the_grid_to_the_best(monkeypatch):
    """Held-out scores that peak at 0.65, above the configured grid's 0.5: the sweep goes up to 0.7 and stops."""
    monkeypatch.setattr(full, "region_engine", lambda model, amp: None)
    monkeypatch.setattr(full, "CachedEngine", lambda engine: type("E", (), {"rewind": lambda self, x: None})())

    def scores(engine, held, tile, mpp, k, t):
        return {"det_f1": 1.0 - abs(t - 0.65), "macro_f1": 0.5}

    monkeypatch.setattr(full, "score_regions", scores)
    threshold, rows = choose_threshold(None, [], 256, 0.5, 3, FullConfig(), "none")
    assert threshold == pytest.approx(0.65)
    assert [r["threshold"] for r in rows][-3:] == pytest.approx([0.6, 0.65, 0.7])


@pytest.mark.slow  # trains on BRCA-M2C tiles: about 25 s on 2 busy cores
def test_full_mode_refits_the_classifier_on_training_points_at_each_network_check(tmp_path, brca_tiles, monkeypatch):
    """The classifier is refitted (classes mode's fit and cross-validation, from the shipped classifier) on the
    training region's points only, once for the base features and at each network-stage check; the written weights
    hold the kept refit."""
    images = annotate(tmp_path / "ann", brca_tiles[:2], regions=True)  # one region trains, one is held out
    fits = []
    real = full.train_classes

    def spy(base, data, names, cfg):
        head, report = real(base, data, names, cfg)
        fits.append((len(data.labels), head, base))
        return head, report

    monkeypatch.setattr(full, "train_classes", spy)
    cfg = FullConfig(head_steps=1, network_steps=2, batch_size=2, eval_every=2, thresholds=(0.3, 0.4))
    args = (tuple(images), tmp_path / "ann", tmp_path / "a.pt", 0.5, "full")
    report = adapt(AdaptConfig(*args, quiet=True, classes=ClassesConfig(steps=20), full=cfg))["full"]
    assert len(fits) == 1 + 1  # the base features, then the network check (at step 2)
    dots = [len(im.labels) for _, im in brca_tiles[:2]]
    assert all(0 < n <= max(dots) for n, _, _ in fits) and report["classifier"]["points"] in {n for n, _, _ in fits}
    assert "kept_own_classifier" not in report["classifier"]
    from muse_fast.model.weights import load_weights

    model, _ = load_weights(tmp_path / "a.pt")
    written = model.classifier.mlp[-1].weight.float()
    assert any(torch.allclose(written, head.mlp[-1].weight.half().float()) for _, head, _ in fits)
    shipped = load_weights(None)[0].classifier.mlp[1].weight
    assert all(torch.equal(base.mlp[1].weight, shipped) for _, _, base in fits)  # fitted from no user point


def test_a_trained_stage_replaces_the_base_only_with_a_clear_gain():
    from muse_fast.adapt.full import choose_stage

    def scores(det, macro):
        return {"det_f1": det, "macro_f1": macro}

    # BRCA-M2C at 6247fee: the network stage led by 0.006 on one held-out image and lost on the test split
    assert choose_stage({"base": scores(0.84, 0.62), "network": scores(0.843, 0.623)}, 0.02) == "base"
    assert choose_stage({"base": scores(0.84, 0.62), "network": scores(0.87, 0.63)}, 0.02) == "network"
    # the network stage must beat the head it started from, once the head has been kept
    held = {"base": scores(0.80, 0.40), "head": scores(0.83, 0.40), "network": scores(0.84, 0.40)}
    assert choose_stage(held, 0.02) == "head"
    assert choose_stage(held, 0.0) == "network"
    assert choose_stage({"base": scores(0.8, 0.4)}, 0.02) == "base"  # no stage ran in the time budget
