"""Probes: kNN and linear on hand-made features; the probe CLI and ROI preparation on real images (smoke)."""

import json

import pytest
import torch

from muse_fast.train.probes import PointSet, knn_accuracy, linear_probe


def _clusters(n, seed):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=g)
    centres = torch.eye(3, 8) * 5
    return PointSet(centres[labels] + torch.randn(n, 8, generator=g), labels)


def test_knn_on_separable_and_random_features():
    train, test = _clusters(600, 0), _clusters(200, 1)
    res = knn_accuracy(train, test, 3, ks=(1, 10, 20))
    assert res["best"] > 0.95 and set(res["per_k"]) == {1, 10, 20}
    noise = PointSet(torch.randn(600, 8), train.labels)
    assert knn_accuracy(noise, PointSet(torch.randn(200, 8), test.labels), 3, ks=(10,))["best"] < 0.6


def test_knn_weighting_follows_the_dino_rule():
    # two near neighbours of class 0 against one much closer neighbour of class 1: exp(sim / 0.07) decides
    gallery = PointSet(torch.tensor([[1.0, 0.0], [0.9, 0.45], [0.8, 0.6]]), torch.tensor([1, 0, 0]))
    query = PointSet(torch.tensor([[1.0, 0.02]]), torch.tensor([1]))
    assert knn_accuracy(gallery, query, 2, ks=(3,))["best"] == 1.0


def test_linear_probe_learns_separable_classes():
    acc, head = linear_probe(_clusters(600, 0), _clusters(100, 2), _clusters(200, 1), 3, epochs=10)
    assert acc > 0.95 and head.weight.shape == (3, 8)


def test_probe_cli_smoke(brca_dir, tmp_path, monkeypatch, capsys):
    from muse_fast.train import evaluate
    from muse_fast.train.data.brca import load_split

    monkeypatch.setattr(evaluate, "load_split", lambda split: load_split(split)[:1])
    assert (
        evaluate.main(["--probes", "knn,linear", "--backbone", "random=random", "--json", str(tmp_path / "p.json")])
        == 0
    )
    result = json.loads((tmp_path / "p.json").read_text())
    assert 0 <= result["random"]["knn"]["best"] <= 1 and 0 <= result["random"]["linear"] <= 1
    assert 0 <= result["random"]["linear_macro_f1"] <= 1 and 0 <= result["random"]["knn"]["best_balanced"] <= 1
    assert "top1" in result["majority class"]["prior"]
    out = capsys.readouterr().out
    assert "| random |" in out and "| majority class |" in out and "bal. acc" in out
    # kNN can query val (the split that chooses recipes); the epoch-selecting probes cannot
    assert evaluate.main(["--probes", "knn", "--split", "val", "--json", str(tmp_path / "v.json")]) == 0
    val = json.loads((tmp_path / "v.json").read_text())["random"]["knn"]
    assert 0 <= val["best"] <= 1 and val["best"] != result["random"]["knn"]["best"]
    capsys.readouterr()
    assert evaluate.main(["--probes", "linear", "--split", "val"]) == 2  # a one-line error, not a traceback
    err = capsys.readouterr().err.strip()
    assert err.startswith("train.evaluate: error:") and "--split test" in err and len(err.splitlines()) == 1, err


def test_detect_nuclei_builds_a_store(brca_dir, cmu_svs, tmp_path, monkeypatch):
    from muse_fast.train import detect_nuclei
    from muse_fast.train.data.brca import load_split
    from muse_fast.train.data.rois import RoiStore

    monkeypatch.setattr(detect_nuclei, "load_split", lambda split: load_split(split)[:1])
    assert (
        detect_nuclei.main(
            ["--out", str(tmp_path / "rois"), "--wsi", str(cmu_svs), "--rois-per-wsi", "2", "--size", "224"]
        )
        == 0
    )
    store = RoiStore(tmp_path / "rois")
    assert len(store) >= 3
    roi = store[0]
    assert roi.image.shape == (224, 224, 3) and len(roi.xy) >= 8
    assert ((roi.xy >= 0) & (roi.xy < 224)).all()
    pytest.importorskip("skimage")
    blobs = detect_nuclei.blob_detector(load_split("train")[0].image, 0.5)
    assert len(blobs) > 20


def test_class_scores_are_not_flattered_by_the_prior():
    from muse_fast.train.probes import class_scores, prior_scores

    labels = torch.tensor([1] * 69 + [0] * 11 + [2] * 20)
    always_tumour = class_scores(torch.ones_like(labels), labels, 3)
    assert always_tumour["top1"] == pytest.approx(0.69)
    assert always_tumour["balanced"] == pytest.approx(1 / 3)
    assert always_tumour["macro_f1"] == pytest.approx((2 * 69 / (69 + 100)) / 3)
    perfect = class_scores(labels, labels, 3)
    assert perfect == {"top1": 1.0, "balanced": 1.0, "macro_f1": 1.0}
    gallery = PointSet(torch.zeros(5, 2), torch.tensor([1, 1, 1, 0, 2]))
    assert prior_scores(gallery, PointSet(torch.zeros(100, 2), labels), 3) == always_tumour


def test_knn_reports_balanced_metrics_beside_top1():
    res = knn_accuracy(_clusters(600, 0), _clusters(200, 1), 3, ks=(1, 10))
    assert set(res) >= {"per_k", "best", "balanced", "macro_f1", "best_balanced", "best_macro_f1"}
    assert res["best_balanced"] > 0.95 and res["best_macro_f1"] > 0.95
    from muse_fast.train.evaluate import format_probe_table

    table = format_probe_table({"majority class": {"prior": {"top1": 0.69, "balanced": 1 / 3, "macro_f1": 0.27}}})
    assert "| majority class | 69.00 |" in table and "bal. acc" in table and "macro F1" in table
