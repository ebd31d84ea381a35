"""3-step runs of the training and evaluation entry points on real BRCA-M2C images."""

import json
import math

import numpy as np
import pytest
import torch

from muse_fast.errors import ConfigError
from muse_fast.model.weights import load_weights
from muse_fast.post.decode import DecodeConfig
from muse_fast.train import evaluate
from muse_fast.train.config import build_config
from muse_fast.train.data.brca import load_split, read_labels
from muse_fast.train.finetune import FinetuneConfig, finetune, lr_schedule


def test_labels_are_read_as_xy_and_zero_based(brca_dir):
    name = (brca_dir / "brca_ds_test.txt").read_text().split()[0][:-4]
    xy, labels = read_labels(brca_dir / "labels" / f"{name}_gt_class_coords.txt")
    raw = np.loadtxt(brca_dir / "labels" / f"{name}_gt_class_coords.txt", dtype=int)
    np.testing.assert_array_equal(xy[:, 0], raw[:, 1])  # file rows are "Y X class"
    assert set(labels) <= {0, 1, 2}


def test_finetune_three_steps_then_evaluate(brca_dir, tmp_path):
    train = load_split("train")[:2]
    val = load_split("val")[:1]
    cfg = FinetuneConfig(out=str(tmp_path / "run"), steps=3, batch_size=2, eval_every=3, warmup_steps=1)
    best = finetune(cfg, train, val)
    assert best["step"] == 2 and 0 <= best["det_f1"] <= 1
    model, meta = load_weights(tmp_path / "run" / "weights.pt")
    assert meta.classes == ("lymphocyte", "tumor", "stromal")
    assert meta.config["provenance"]["init"] == f"random (seed {cfg.seed})"  # where the file came from
    assert meta.config["provenance"]["architecture"] == cfg.model and meta.config["provenance"]["recipe"]["steps"] == 3
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["steps"] == 3
    assert len((tmp_path / "run" / "log.jsonl").read_text().splitlines()) == 3
    scores = evaluate.evaluate_images(model, val, evaluate.EvalConfig(), with_accuracy=True)
    assert set(scores) >= {"mcspatnet", "hungarian", "accuracy_at_gt"}
    assert 0 <= scores["accuracy_at_gt"] <= 1


def test_finetune_with_bf16_autocast_on_the_cpu(brca_dir, tmp_path):
    train, val = load_split("train")[:2], load_split("val")[:1]
    cfg = FinetuneConfig(out=str(tmp_path / "run"), steps=2, batch_size=2, eval_every=2, warmup_steps=1, amp="bf16")
    best = finetune(cfg, train, val)
    assert best["step"] == 1 and 0 <= best["det_f1"] <= 1
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss"]) for r in log)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["amp"] == "bf16"


def test_finetune_with_weight_averaging_keeps_both_models(brca_dir, tmp_path):
    train, val = load_split("train")[:2], load_split("val")[:1]
    cfg = FinetuneConfig(
        out=str(tmp_path / "run"), steps=3, batch_size=2, eval_every=3, warmup_steps=1, ema_momentum=0.99
    )
    best = finetune(cfg, train, val)
    assert best["step"] == 2 and best["raw"]["step"] == 2
    last = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[-1])
    assert set(last) >= {"val", "val_raw"}  # both evaluated at the same step
    averaged, _ = load_weights(tmp_path / "run" / "weights.pt")
    raw, _ = load_weights(tmp_path / "run" / "weights_raw.pt")
    a, r = averaged.state_dict(), raw.state_dict()
    assert a.keys() == r.keys()
    assert any(not torch.equal(a[k], r[k]) for k in a if a[k].is_floating_point())  # an average, not a copy


def test_finetune_ends_with_a_calibrated_final_file(brca_dir, tmp_path):
    train, val = load_split("train")[:2], load_split("val")[:1]
    cfg = FinetuneConfig(
        out=str(tmp_path / "run"), steps=2, batch_size=2, eval_every=2, warmup_steps=1, calibrate_thresholds="0.3,0.6"
    )
    best = finetune(cfg, train, val)
    assert best["calibrated"]["threshold"] in (0.3, 0.6) and best["calibrated"]["tau"] == 0.0
    selected, _ = load_weights(tmp_path / "run" / "weights.pt")
    final, meta = load_weights(tmp_path / "run" / "final.pt")
    assert len(meta.config["calibration"]["sweep"]) == 2
    shift = final.centre_head.out.bias[0] - selected.centre_head.out.bias[0]
    expected = torch.logit(torch.tensor(DecodeConfig.threshold)) - torch.logit(
        torch.tensor(best["calibrated"]["threshold"])
    )
    assert shift.item() == pytest.approx(float(expected), abs=2e-3)  # the chosen threshold is folded in (fp16 file)
    assert json.loads((tmp_path / "run" / "best.json").read_text())["calibrated"] == best["calibrated"]


@pytest.mark.parametrize(
    "grid, message",
    [
        ({"calibrate_thresholds": "0.3,x"}, "--calibrate-thresholds"),
        ({"calibrate_thresholds": "0.3,1.5"}, "--calibrate-thresholds"),
        ({"calibrate_thresholds": "0"}, "--calibrate-thresholds"),
        ({"calibrate_taus": "nan"}, "--calibrate-taus"),
        ({"calibrate_taus": "-1"}, "--calibrate-taus"),
        ({"calibrate_taus": ""}, "--calibrate-taus"),
        ({"steps": 0}, "--steps"),
    ],
)
def test_a_bad_calibration_grid_is_refused_before_training(tmp_path, grid, message):
    cfg = FinetuneConfig(out=str(tmp_path / "run"), **grid)
    with pytest.raises(ConfigError, match=message):
        finetune(cfg, [], [])
    assert not (tmp_path / "run").exists()  # nothing written


def test_finetune_cli_errors_are_one_line_and_yaml_numbers_are_grids(tmp_path, capsys):
    from muse_fast.train import finetune as cli
    from muse_fast.train.calibrate import parse_floats

    assert parse_floats(0.35) == (0.35,) and parse_floats([0.3, 0.4]) == (0.3, 0.4) and parse_floats("0") == (0.0,)
    yaml_cfg = tmp_path / "c.yaml"
    yaml_cfg.write_text("calibrate_taus: .nan\n")
    assert cli.main(["--config", str(yaml_cfg), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("train.finetune: error: --calibrate-") and len(err.splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_an_earlier_run_in_out_is_refused_unless_overwritten(brca_dir, tmp_path):
    train, val = load_split("train")[:2], load_split("val")[:1]
    kwargs = dict(out=str(tmp_path / "run"), steps=1, batch_size=2, eval_every=1, warmup_steps=1)
    finetune(FinetuneConfig(**kwargs, calibrate_thresholds="0.3"), train, val)
    assert (tmp_path / "run" / "final.pt").exists()
    with pytest.raises(ConfigError, match="already holds a run .*final.pt.*--overwrite true"):
        finetune(FinetuneConfig(**kwargs), train, val)
    finetune(FinetuneConfig(**kwargs, calibrate_thresholds="", ema_momentum=0, overwrite=True), train, val)
    assert not (tmp_path / "run" / "final.pt").exists() and not (tmp_path / "run" / "weights_raw.pt").exists()


def test_evaluate_cli_prints_both_matchers(brca_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(evaluate, "load_split", lambda split: load_split(split)[:2])
    assert evaluate.main(["--split", "test", "--json", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    assert "mcspatnet" in out and "hungarian" in out and "accuracy" in out and "balanced accuracy" in out
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["mcspatnet"]["det_f1"] > 0.3  # the shipped weights find nuclei on real test tiles
    assert 0 <= scores["balanced_accuracy_at_gt"] <= 1 and 0 <= scores["macro_f1_at_gt"] <= 1


def test_evaluate_cli_perturbed_and_with_tta(brca_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(evaluate, "load_split", lambda split: load_split(split)[:1])
    assert evaluate.main(["--split", "val", "--json", str(tmp_path / "clean.json")]) == 0
    args = ["--split", "val", "--perturb", "hed=0.2,scale=0.8,blur=0.8,jpeg=50", "--json", str(tmp_path / "p.json")]
    assert evaluate.main(args) == 0
    assert "perturbed: hed=0.2,scale=0.8" in capsys.readouterr().out
    clean, perturbed = (json.loads((tmp_path / f).read_text()) for f in ("clean.json", "p.json"))
    assert perturbed["perturb"].startswith("hed=0.2") and perturbed["mcspatnet"]["det_f1"] > 0.2
    assert perturbed["mcspatnet"] != clean["mcspatnet"]
    assert evaluate.main(["--split", "val", "--tta", "--json", str(tmp_path / "t.json")]) == 0
    assert json.loads((tmp_path / "t.json").read_text())["mcspatnet"]["det_f1"] > 0.3


def test_calibrate_cli_writes_weights_with_the_chosen_tau(brca_dir, tmp_path, monkeypatch, capsys):
    from muse_fast.train import calibrate

    monkeypatch.setattr(calibrate, "load_split", lambda split: load_split(split)[:1])
    assert calibrate.main(["--out", str(tmp_path / "cal.pt"), "--taus", "0,1", "--thresholds", "0.3,0.5"]) == 0
    _, meta = load_weights(tmp_path / "cal.pt")
    cal = meta.config["calibration"]
    assert cal["tau"] in (0.0, 1.0) and cal["threshold"] in (0.3, 0.5) and len(cal["sweep"]) == 4
    assert "threshold" in capsys.readouterr().out


def test_schedule_and_config_validation():
    lrs = lr_schedule(FinetuneConfig(steps=50, warmup_steps=10, lr=1e-3, min_lr=1e-5))
    assert len(lrs) == 50 and lrs[9] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1e-5, rel=0.05)
    assert lrs[0] < lrs[5] < lrs[9] and lrs[20] > lrs[40]
    with pytest.raises(ConfigError, match="unknown config key"):
        build_config(FinetuneConfig, {"stepz": 3})


def test_semi_supervised_finetune_three_steps(brca_dir, tmp_path):
    from muse_fast.train.data.rois import Roi, RoiWriter

    train = load_split("train")[:2]
    writer = RoiWriter(tmp_path / "rois", 0.5, 256)
    for im in train:
        writer.add(Roi(np.ascontiguousarray(im.image[:256, :256]), np.zeros((0, 2), np.float32)), im.name)
    writer.close()
    cfg = FinetuneConfig(
        out=str(tmp_path / "run"),
        steps=3,
        batch_size=2,
        eval_every=3,
        warmup_steps=1,
        pseudo_rois=str(tmp_path / "rois"),
        pseudo_batch=2,
        pseudo_threshold=0.0,
    )
    finetune(cfg, train, load_split("val")[:1])
    records = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert all("pseudo_centre" in r and np.isfinite(r["pseudo_centre"]) for r in records)
    load_weights(tmp_path / "run" / "weights.pt")


def test_finetune_from_a_pretrained_backbone(brca_dir, tmp_path):
    import torch

    from muse_fast.model import create_backbone
    from muse_fast.train.pretrain import Branch, PretrainConfig, official_backbone_state

    branch = Branch(PretrainConfig(view_size=224))
    torch.save(official_backbone_state(branch), tmp_path / "backbone.pth")
    cfg = FinetuneConfig(
        out=str(tmp_path / "run"),
        steps=1,
        batch_size=2,
        eval_every=1,
        warmup_steps=1,
        init=str(tmp_path / "backbone.pth"),
        half=False,
        model="muse_vit_t16_stem",  # train.pretrain's ViT-Ti backbone into the ViT with a conv stem
    )
    from muse_fast.train.finetune import build_model

    model = build_model(cfg)  # the stem model has a conv stem, which no pretrained backbone has
    reference = branch.backbone.state_dict()
    own = model.backbone.state_dict()
    assert set(own) - set(reference) == {k for k in own if k.startswith("stem.")}
    for key, value in reference.items():
        assert torch.equal(own[key], value), key
    assert create_backbone("muse_vit_t16") is not None
