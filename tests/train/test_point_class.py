"""Classifier losses (ce, balanced, focal), class-prior calibration, and the new fine-tuning options end to end."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from muse_fast.train.calibrate import CachedEngine, fold_bias, prior_bias
from muse_fast.train.losses.point_class import class_weights, point_class_loss


def _batch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 3, generator=g)
    labels = torch.tensor([[0, 1, 2, 1, -100], [1, 1, 0, -100, -100]])
    return logits, labels


def test_class_weights_are_inverse_frequency_with_mean_one():
    w = class_weights(np.array([0, 1, 1, 1, 2, 2]), 3)
    torch.testing.assert_close(w, torch.tensor([2.0, 2 / 3, 1.0]))
    counts = torch.tensor([1.0, 3.0, 2.0])
    assert float((w * counts).sum() / counts.sum()) == pytest.approx(1.0)
    assert torch.equal(class_weights(np.array([0, 1, 1]), 3, power=0.0), torch.ones(3))


def test_losses_agree_where_they_should():
    logits, labels = _batch()
    flat, lab = logits.reshape(-1, 3), labels.reshape(-1)
    ce = F.cross_entropy(flat, lab, ignore_index=-100)
    torch.testing.assert_close(point_class_loss(logits, labels, "ce"), ce)
    torch.testing.assert_close(point_class_loss(logits, labels, "balanced", torch.ones(3)), ce)
    torch.testing.assert_close(point_class_loss(logits, labels, "focal", None, gamma=0.0), ce)
    w = torch.tensor([3.0, 0.5, 1.0])
    torch.testing.assert_close(point_class_loss(logits, labels, "balanced", w), F.cross_entropy(flat, lab, weight=w))
    assert point_class_loss(logits, labels, "focal") < ce  # easy points are down-weighted
    assert point_class_loss(logits, torch.full_like(labels, -100), "focal") == 0
    with pytest.raises(ValueError, match="focal"):
        point_class_loss(logits, labels, "hinge")


def test_prior_bias_and_folding():
    labels = np.array([0] * 10 + [1] * 70 + [2] * 20)
    bias = prior_bias(labels, 3, 1.0)
    torch.testing.assert_close(bias, -torch.log(torch.tensor([0.1, 0.7, 0.2])))
    assert torch.equal(prior_bias(labels, 3, 0.0), torch.zeros(3))
    from muse_fast.model import create_model

    model = create_model("muse_vit_t16", img_size=32).eval()
    feats = torch.randn(4, 192)
    before = model.classifier(feats)
    fold_bias(model, bias)
    torch.testing.assert_close(model.classifier(feats), before + bias)


def test_folded_threshold_keeps_the_same_peaks_at_the_default():
    from muse_fast.model import create_model
    from muse_fast.post.decode import DecodeConfig
    from muse_fast.train.calibrate import fold_threshold

    model = create_model("muse_vit_t16", img_size=32).eval()
    with torch.no_grad():
        model.centre_head.out.weight.normal_(0, 0.5)
        x = torch.rand(1, 3, 32, 32) * 255
        heat = torch.sigmoid(model(x).centre[:, 0])
        fold_threshold(model, 0.4)
        folded = torch.sigmoid(model(x).centre[:, 0])
    assert torch.equal(heat >= 0.4, folded >= DecodeConfig.threshold)
    assert torch.equal(heat.flatten().argsort(), folded.flatten().argsort())


def test_cached_engine_replays_and_biases():
    class Counting:
        name, device, calls = "c", torch.device("cpu"), 0

        def run(self, tiles):
            Counting.calls += 1
            return tiles.sum()

        def classify(self, feats):
            return feats

    engine = CachedEngine(Counting())
    first = [engine.run(np.ones(2)), engine.run(np.ones(3))]
    engine.rewind(torch.tensor([1.0, 0.0]))
    assert [engine.run(None), engine.run(None)] == first and Counting.calls == 2
    torch.testing.assert_close(engine.classify(torch.zeros(1, 2)), torch.tensor([[1.0, 0.0]]))


def test_finetune_with_every_new_option(brca_dir, tmp_path):
    """Stem model warm-started from plain weights, focal loss, stain, blur, JPEG and scale jitter: 2 steps."""
    from muse_fast.model.weights import load_weights
    from muse_fast.train.data.brca import load_split
    from muse_fast.train.finetune import FinetuneConfig, build_model, finetune

    train, val = load_split("train")[:2], load_split("val")[:1]
    plain = FinetuneConfig(
        out=str(tmp_path / "plain"), steps=1, batch_size=2, eval_every=1, warmup_steps=1, model="muse_vit_t16_stem"
    )
    finetune(plain, train, val)
    cfg = FinetuneConfig(
        out=str(tmp_path / "run"),
        model="muse_vit_t16_stem",
        init=str(tmp_path / "plain" / "weights.pt"),
        steps=2,
        batch_size=2,
        eval_every=2,
        warmup_steps=1,
        cls_loss="focal",
        cls_balance_power=0.5,
        stain=0.2,
        blur_p=1.0,
        jpeg_p=1.0,
        scale_jitter=0.2,
        half=False,
    )
    source, _ = load_weights(tmp_path / "plain" / "weights.pt")
    warm = build_model(cfg).state_dict()
    for key, value in source.state_dict().items():
        assert torch.equal(warm[key], value), key
    best = finetune(cfg, train, val)
    assert best["step"] == 1
    model, meta = load_weights(tmp_path / "run" / "weights.pt")
    assert meta.model == "muse_vit_t16_stem" and meta.config["cls_loss"] == "focal"
    records = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["cls"]) for r in records)


def test_unknown_classifier_loss_is_a_config_error(tmp_path):
    from muse_fast.errors import ConfigError
    from muse_fast.train.finetune import FinetuneConfig, finetune

    with pytest.raises(ConfigError, match="cls_loss"):
        finetune(FinetuneConfig(out=str(tmp_path), cls_loss="hinge"), [], [])


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--thresholds", "nan"], "--thresholds must be a comma list of numbers"),
        (["--thresholds", "0.3,x"], "--thresholds must be a comma list of numbers"),
        (["--thresholds", "0.3,,0.4"], "empty item"),
        (["--thresholds", "0.3,"], "empty item"),
        (["--thresholds", ""], "--thresholds is empty"),
        (["--thresholds", "1.2"], "--thresholds must lie in"),
        (["--thresholds", "1e-50"], "--thresholds must lie in"),  # would fold an infinite centre bias
        (["--thresholds", "0.999999"], "--thresholds must lie in"),
        (["--taus", "inf"], "--taus must be a comma list of numbers"),
        (["--taus", "0,"], "empty item"),
        (["--taus", "-0.5"], "--taus must be 0 or more"),
        (["--out", "{weights}"], "is one of the inputs"),
        (["--out", "{tmp}"], "is a folder"),
    ],
)
def test_calibrate_cli_refuses_a_bad_grid_in_one_line_before_loading_weights(tmp_path, capsys, flags, message):
    from muse_fast.train import calibrate as cli

    missing = tmp_path / "no_such_weights.pt"  # never opened: the grid and --out are checked first
    flags = [f.format(weights=missing, tmp=tmp_path) for f in flags]
    assert cli.main(["--weights", str(missing), "--out", str(tmp_path / "out.pt"), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("train.calibrate: error: ") and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out.pt").exists()
