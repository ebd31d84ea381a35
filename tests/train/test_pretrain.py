"""MUSE pretraining: views and matching, losses, EMA, schedules, resume, DDP, and smoke runs of every entry point."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from muse_fast.train.data.rois import Roi, RoiStore, RoiWriter
from muse_fast.train.data.views import ViewConfig, crop_view, view_pair
from muse_fast.train.ema import ema_update
from muse_fast.train.losses.dino_ce import centred_teacher, sinkhorn_knopp, soft_cross_entropy, update_center
from muse_fast.train.pretrain import PretrainConfig, pretrain
from muse_fast.train.schedules import cosine, linear_then_constant

TINY = dict(
    batch_size=2,
    view_size=64,
    out_dim=32,
    head_hidden=32,
    head_bottleneck=16,
    warmup_steps=1,
    warmup_teacher_temp_steps=2,
    threads=1,
)


def _roi(size=128, n=40, seed=0) -> Roi:
    rng = np.random.default_rng(seed)
    flat = rng.choice((size - 4) ** 2, size=n, replace=False)  # distinct integer pixel positions
    xy = np.stack([flat % (size - 4), flat // (size - 4)], 1).astype(np.float32) + 2
    image = np.full((size, size, 3), 255, np.uint8)
    for i, (x, y) in enumerate(xy.astype(int)):
        image[y, x] = (i, 255 - i, 7)  # each nucleus marks its own pixel with its identity
    return Roi(image, xy)


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rois")
    writer = RoiWriter(folder, mpp=0.5, size=128, chunk=3)
    for seed in range(7):
        writer.add(_roi(seed=seed), f"synthetic#{seed}")
    writer.close()
    return folder


def test_roi_store_round_trip(tiny_store):
    store = RoiStore(tiny_store)
    assert len(store) == 7 and store.mpp == 0.5 and store.size == 128
    for seed in (0, 4, 6):  # across chunk boundaries
        np.testing.assert_array_equal(store[seed].xy, _roi(seed=seed).xy)
        np.testing.assert_array_equal(store[seed].image, _roi(seed=seed).image)


def test_view_coordinates_follow_the_pixels():
    """At mpp equal to the ROI's the crop is exact, so each nucleus' marked pixel must sit at its new position."""
    roi = _roi()
    cfg = ViewConfig(size=64, mpp_min=0.5, mpp_max=0.5, margin=0)
    rng = np.random.default_rng(3)
    for _ in range(8):
        view = crop_view(roi, 0.5, (float(rng.integers(0, 64)), float(rng.integers(0, 64))), 0.5, cfg, rng)
        for i in np.flatnonzero(view.visible):
            x, y = np.round(view.xy[i]).astype(int)
            assert np.allclose(view.xy[i], (x, y))
            assert tuple(view.image[y, x]) == (i, 255 - i, 7)


def test_view_scale_maps_coordinates_exactly():
    roi = _roi()
    cfg = ViewConfig(size=32, mpp_min=1.0, mpp_max=1.0, margin=0)
    view = crop_view(roi, 0.5, (10.0, 20.0), 1.0, cfg, np.random.default_rng(0), augment=False)
    # pixel-index convention: input pixel i (centre i + 0.5) -> output (i + 0.5 - origin) / 2 - 0.5
    np.testing.assert_allclose(view.xy, (roi.xy - [10.0, 20.0] + 0.5) / 2 - 0.5, rtol=1e-6)
    # a dark 2x2 block, halved (antialiased), is darkest at exactly the predicted output pixel
    block = np.full((64, 64, 3), 255, np.uint8)
    block[30:32, 40:42] = 0
    out = crop_view(
        Roi(block, np.array([[40.5, 30.5]], np.float32)),
        0.5,
        (0.0, 0.0),
        1.0,
        cfg,
        np.random.default_rng(0),
        augment=False,
    )
    x, y = out.xy[0]
    darkest = np.unravel_index(out.image.sum(-1).argmin(), out.image.shape[:2])
    assert (x, y) == (20.0, 15.0) and darkest == (15, 20)


def test_view_pairs_overlap_and_match_by_identity():
    roi = _roi(n=200)
    cfg = ViewConfig(size=64, mpp_min=0.5, mpp_max=0.9, max_matched=20)
    rng = np.random.default_rng(0)
    for _ in range(10):
        a, b, matched = view_pair(roi, 0.5, cfg, rng)
        assert a.visible[matched].all() and b.visible[matched].all() and len(matched) <= 20
        assert 0.5 <= a.mpp <= 0.9 and 0.5 <= b.mpp <= 0.9


def dino_cross_entropy(student, teacher, center, student_temp, teacher_temp):
    return soft_cross_entropy(student, centred_teacher(teacher, center, teacher_temp), student_temp)


def test_dino_cross_entropy_hand_cases():
    s = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    center = torch.zeros(1, 2)
    loss = dino_cross_entropy(s, t, center, student_temp=1.0, teacher_temp=1.0)
    q = torch.softmax(t, -1)
    expected = -(q * torch.log_softmax(s, -1)).sum(-1).mean()
    assert torch.isclose(loss, expected)
    # a sharp teacher and a matching student: loss -> 0; centering removes a constant offset
    sharp = dino_cross_entropy(torch.tensor([[50.0, 0.0]]), torch.tensor([[10.0, 0.0]]), center, 1.0, 0.01)
    assert sharp < 1e-6
    shifted = dino_cross_entropy(s, t + 5, center + 5, 1.0, 1.0)
    assert torch.isclose(shifted, loss)
    assert dino_cross_entropy(torch.zeros(0, 2), torch.zeros(0, 2), center, 0.1, 0.04) == 0
    new = update_center(torch.zeros(1, 2), torch.tensor([[2.0, 4.0]]), momentum=0.9)
    assert torch.allclose(new, torch.tensor([[0.2, 0.4]]))


def test_sinkhorn_knopp_balances_prototypes():
    # every row prefers prototype 0; Sinkhorn-Knopp spreads the batch over all prototypes, rows stay distributions
    logits = torch.tensor([[1.0, 0.5, 0.0, 0.0], [1.0, 0.0, 0.5, 0.0], [1.0, 0.0, 0.0, 0.5], [1.0, 0.2, 0.2, 0.2]])
    q = sinkhorn_knopp(logits, teacher_temp=0.1, iterations=50)
    assert torch.allclose(q.sum(1), torch.ones(4), atol=1e-5)
    assert torch.allclose(q.sum(0), torch.ones(4), atol=1e-3)  # 4 rows over 4 prototypes: one each
    assert q[:3].argmax(1).tolist() == [1, 2, 3]  # each row keeps its own second choice
    # one row must spread over every prototype alone: uniform; an empty batch stays empty
    one = sinkhorn_knopp(logits[:1], 0.1, iterations=3)
    assert torch.allclose(one, torch.full((1, 4), 0.25), atol=1e-5)
    assert sinkhorn_knopp(torch.zeros(0, 4), 0.1).shape == (0, 4)


def test_ema_update():
    teacher, student = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = [p.detach().clone() for p in teacher.parameters()]
    ema_update(teacher, student, momentum=0.9)
    for t, b, s in zip(teacher.parameters(), before, student.parameters()):
        assert torch.allclose(t, 0.9 * b + 0.1 * s)


def test_ema_update_averages_float_buffers_only_when_asked():
    teacher, student = torch.nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3)
    student.running_mean.fill_(1.0)
    student.num_batches_tracked.fill_(7)
    ema_update(teacher, student, momentum=0.75, average_buffers=True)
    assert torch.allclose(teacher.running_mean, torch.full((3,), 0.25))  # 0.75 * 0 + 0.25 * 1
    assert teacher.num_batches_tracked.item() == 7  # integer counters are copied, never averaged
    ema_update(teacher, student, momentum=0.75)
    assert torch.allclose(teacher.running_mean, student.running_mean)  # the DINO / mean-teacher rule: copied


def test_warmed_momentum_starts_low_and_caps():
    from muse_fast.train.ema import warmed_momentum

    assert warmed_momentum(0.995, 0) == pytest.approx(0.1)
    assert warmed_momentum(0.995, 90) == pytest.approx(91 / 100)
    assert warmed_momentum(0.995, 10_000) == 0.995


def test_schedules():
    lr = cosine(1.0, 0.0, 10, warmup=2)
    assert len(lr) == 10 and lr[0] == 0 and lr[2] == 1.0 and lr[-1] == pytest.approx(0.0)
    assert all(a >= b for a, b in zip(lr[2:], lr[3:]))
    temp = linear_then_constant(0.04, 0.07, 10, 4)
    assert temp[0] == 0.04 and temp[3] == pytest.approx(0.07) and (temp[4:] == 0.07).all()
    assert cosine(0.996, 1.0, 5)[-1] == pytest.approx(1.0)


def test_pretrain_smoke_and_exact_resume(tiny_store, tmp_path, monkeypatch):
    import muse_fast.train.pretrain as module

    # the first convolution of a shape in a process can differ from later ones in the last bit (oneDNN), and
    # training amplifies that: a throwaway step first, so that both compared runs are warm
    pretrain(PretrainConfig(rois=str(tiny_store), out=str(tmp_path / "warm"), steps=1, **TINY))
    straight = PretrainConfig(rois=str(tiny_store), out=str(tmp_path / "a"), steps=4, checkpoint_every=2, **TINY)
    pretrain(straight)
    # the same run killed while preparing step 2 (after the checkpoint of step 1), then started again
    interrupted = PretrainConfig(**{**straight.__dict__, "out": str(tmp_path / "c")})
    real_batch = module.make_step_batch

    def crash_at_step_2(store, cfg, step, rank):
        if step == 2:
            raise KeyboardInterrupt
        return real_batch(store, cfg, step, rank)

    monkeypatch.setattr(module, "make_step_batch", crash_at_step_2)
    with pytest.raises(KeyboardInterrupt):
        pretrain(interrupted)
    monkeypatch.setattr(module, "make_step_batch", real_batch)
    pretrain(interrupted)
    logs = {k: [json.loads(x) for x in (tmp_path / k / "log.jsonl").read_text().splitlines()] for k in "ac"}
    assert [r["step"] for r in logs["c"]] == [0, 1, 2, 3]
    for r_a, r_c in zip(logs["a"], logs["c"]):
        assert r_a["loss"] == pytest.approx(r_c["loss"], rel=1e-5, abs=1e-6)
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["teacher"]
    c = torch.load(tmp_path / "c" / "checkpoint.pt", weights_only=True)["teacher"]
    for key in a:
        assert torch.allclose(a[key].float(), c[key].float(), atol=1e-5), key
    assert all(math.isfinite(r["loss"]) for r in logs["a"])
    from muse_fast.model import load_official_checkpoint

    load_official_checkpoint(tmp_path / "a" / "backbone.pth", "muse_vit_t16", 224)


@pytest.mark.parametrize("centering", ["ema", "sinkhorn"])
def test_teacher_centre_moves_only_under_ema_centring(tiny_store, tmp_path, centering):
    cfg = PretrainConfig(rois=str(tiny_store), out=str(tmp_path / centering), steps=2, centering=centering, **TINY)
    pretrain(cfg)
    centers = torch.load(tmp_path / centering / "checkpoint.pt", weights_only=True)["centers"]
    moved = [bool(c.abs().sum() > 0) for c in centers.values()]
    assert moved == [centering == "ema"] * 2


def test_lfov_stage_continues_from_224_weights(tiny_store, tmp_path):
    base = PretrainConfig(rois=str(tiny_store), out=str(tmp_path / "base"), steps=1, **TINY)
    pretrain(base)
    lfov = PretrainConfig(
        **{
            **base.__dict__,
            "out": str(tmp_path / "lfov"),
            "stage": "lfov",
            "view_size": 96,
            "init": str(tmp_path / "base" / "backbone.pth"),
        }
    )
    from muse_fast.errors import ConfigError

    # 96-px views at 0.5 um/px and a 1.5x coarser partner need 72 um; the tiny store's ROIs cover 64 um
    with pytest.raises(ConfigError, match="covers 64 um per ROI, too small .* --size 144"):
        pretrain(lfov)
    writer = RoiWriter(tmp_path / "large", mpp=0.5, size=160)
    for seed in range(3):
        writer.add(_roi(size=160, seed=seed), f"synthetic#{seed}")
    writer.close()
    lfov = PretrainConfig(**{**lfov.__dict__, "rois": str(tmp_path / "large")})
    pretrain(lfov)
    state = torch.load(tmp_path / "lfov" / "backbone.pth", weights_only=True)
    assert state["muse_fast"]["view_size"] == 96
    with pytest.raises(ConfigError, match="--init"):
        PretrainConfig(stage="lfov").resolved()


def test_ddp_two_cpu_processes(tiny_store, tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29533",
        "-m",
        "train.pretrain",
        "--rois",
        str(tiny_store),
        "--out",
        str(tmp_path / "ddp"),
        "--steps",
        "2",
        "--centering",
        "sinkhorn",  # its sums are all-reduced across the two ranks
    ]
    for key, value in TINY.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "ddp" / "backbone.pth").exists()
    assert len((tmp_path / "ddp" / "log.jsonl").read_text().splitlines()) == 2


def test_pretrain_with_bf16_autocast_on_the_cpu(tiny_store, tmp_path):
    cfg = PretrainConfig(rois=str(tiny_store), out=str(tmp_path / "bf16"), steps=2, amp="bf16", **TINY)
    parts = pretrain(cfg)
    assert math.isfinite(parts["loss"])
    state = torch.load(tmp_path / "bf16" / "checkpoint.pt", weights_only=True)["teacher"]
    assert all(v.dtype != torch.bfloat16 for v in state.values())  # autocast computes in bf16, keeps fp32 weights
