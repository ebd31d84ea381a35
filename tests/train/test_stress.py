"""Stress tests (pale, elongated, crowded, frozen), the NuCLS loader and class-agnostic recall reports."""

import json

import numpy as np
import pytest

from muse_fast.errors import ConfigError
from muse_fast.train import evaluate
from muse_fast.train.data.brca import LabelledImage, load_split
from muse_fast.train.data.nucls import NUCLS_CLASSES, load_nucls, nucls_dir
from muse_fast.train.data.stress import crowd, elongate, frozen, pale_nuclei, to_hed
from muse_fast.train.perturb import Perturbation, parse_perturbation, stress_labelled
from muse_fast.train.recall import detection_report, nearest_neighbour_um


def _gradient(h=300, w=280):
    """R encodes x, G encodes y (half a level per pixel), so positions can be read back from colours."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 0.5, yy * 0.5, np.full_like(xx, 128)], -1).astype(np.uint8)


def _tissue(seed=0, h=200, w=220):
    """Pink background with dark purple discs (radius 6 px) at known, well separated points."""
    rng = np.random.default_rng(seed)
    image = np.empty((h, w, 3), np.uint8)
    image[:] = (230, 170, 200)
    xy = np.array([[x, y] for y in range(20, h - 20, 30) for x in range(20, w - 20, 30)], np.float32)
    xy += rng.uniform(-3, 3, xy.shape).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    for x, y in xy:
        image[np.hypot(xx - x, yy - y) <= 6] = (70, 40, 120)
    return image, xy, rng.integers(0, 3, len(xy))


def test_pale_removes_haematoxylin_inside_nuclei_only():
    image, xy, _ = _tissue()
    out = pale_nuclei(image, xy, mpp=0.5, strength=0.6, radius_um=4.0)
    assert np.array_equal(pale_nuclei(image, xy, 0.5, 0.0), image)
    h0, h1 = to_hed(image)[..., 0], to_hed(out)[..., 0]
    for x, y in xy.round().astype(int):
        assert h1[y, x] == pytest.approx(0.4 * h0[y, x], rel=0.05)  # 8 px disc: the centre keeps 40%
    far = np.ones(image.shape[:2], bool)
    yy, xx = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
    for x, y in xy:
        far &= np.hypot(xx - x, yy - y) > 11  # beyond the disc (8 px) and its feather (2 px)
    assert np.array_equal(out[far], image[far])


@pytest.mark.parametrize("stretch,shear", [(1.6, 0.0), (1.5, 0.4), (0.7, -0.3)])
def test_elongation_moves_labels_with_the_pixels(stretch, shear):
    image = _gradient()
    xy = np.random.default_rng(1).uniform(10, 270, (60, 2)).round().astype(np.float32)
    out, moved, keep = elongate(image, xy, stretch, shear)
    assert keep.all() and len(moved) == len(xy)
    assert out.shape[1] == pytest.approx(280 * stretch + abs(shear) * 300, abs=1)
    assert out.shape[0] == pytest.approx(300 / stretch, abs=1)
    for (x0, y0), (x1, y1) in zip(xy, moved):
        r, g = out[int(round(y1)), int(round(x1)), :2].astype(float)
        assert abs(r - 0.5 * x0) <= 1.5 and abs(g - 0.5 * y0) <= 1.5
    same, same_xy, _ = elongate(image, xy, 1.0, 0.0)
    assert np.array_equal(same, image) and np.allclose(same_xy, xy, atol=1e-4)


def test_crowding_pastes_labelled_nuclei_at_gland_spacing():
    image, xy, labels = _tissue()
    out, new_xy, new_labels = crowd(image, xy, labels, 0.5, 1.0, np.random.default_rng(3), spacing_um=5.0)
    added = len(new_xy) - len(xy)
    assert added > len(xy) // 2 and np.array_equal(new_xy[: len(xy)], xy) and len(new_labels) == len(new_xy)
    assert nearest_neighbour_um(new_xy, 0.5).min() >= 0.9 * 5.0 - 0.5  # rounded to whole pixels
    for x, y in new_xy[len(xy) :].round().astype(int):
        assert tuple(out[y, x]) == (70, 40, 120)  # a pasted nucleus' centre is a nucleus' colour
    again = crowd(image, xy, labels, 0.5, 1.0, np.random.default_rng(3), spacing_um=5.0)
    assert np.array_equal(again[0], out) and np.array_equal(again[1], new_xy)


def test_frozen_artefacts_are_seeded_and_spare_labelled_nuclei():
    image, xy, _ = _tissue()
    a = frozen(image, xy, 0.5, 1.0, np.random.default_rng(0))
    assert np.array_equal(a, frozen(image, xy, 0.5, 1.0, np.random.default_rng(0)))
    assert not np.array_equal(a, frozen(image, xy, 0.5, 1.0, np.random.default_rng(1)))
    assert np.array_equal(frozen(image, xy, 0.5, 0.0, np.random.default_rng(0)), image)
    centres = xy.round().astype(int)
    assert a[centres[:, 1], centres[:, 0]].mean() < 150  # nuclei stay dark: no ice hole over a label
    assert (a.min(-1) > 220).sum() > 50  # and there are holes elsewhere


def test_stress_labelled_and_parsing():
    image, xy, labels = _tissue()
    im = LabelledImage("t", image, xy, labels)
    assert stress_labelled(im, Perturbation(), 0, 0.5) is im
    p = parse_perturbation("crowd=0.5,stretch=1.3,pale=0.3,frozen=0.5")
    assert p.stressed and p.active and p.describe().endswith("pale=0.3,stretch=1.3,crowd=0.5,frozen=0.5")
    out = stress_labelled(im, p, 0, 0.5)
    assert len(out.xy) > len(xy) and len(out.labels) == len(out.xy) and out.image.shape[1] > image.shape[1]
    for bad in ("pale=1.5", "stretch=0", "crowd=-1", "shear=3"):
        with pytest.raises(ConfigError, match="perturb"):
            parse_perturbation(bad)


def test_detection_report_counts_per_class_and_spacing():
    gt = np.array([[10, 10], [14, 10], [50, 50], [90, 90]], np.float64)  # two nuclei 2 um apart at 0.5 um/px
    pred = np.array([[10.5, 10], [50, 52], [91, 90], [200, 200]], np.float64)
    report = detection_report([(gt, np.array([0, 0, 1, 2]), pred)], 0.5, ("a", "b", "c"))
    assert report["det_recall"] == 0.75 and report["det_precision"] == 0.75 and report["n_pred"] == 4
    assert report["recall_per_class"] == {"a": 0.5, "b": 1.0, "c": 1.0}
    assert report["recall_by_spacing"]["0-4 um"] == {"recall": 0.5, "n": 2}
    assert report["recall_by_spacing"]["8-inf um"] == {"recall": 1.0, "n": 2}


def test_nucls_subset_loads_every_labelled_nucleus():
    if not nucls_dir().is_dir():
        pytest.skip(
            f"{nucls_dir()} not found; it holds crops of NuCLS (CC0, sites.google.com/view/nucls): "
            "set MUSE_DATA to the folder holding nucls-subset/"
        )
    images = load_nucls()
    assert len(images) == 15 and sum(len(im.xy) for im in images) == 584
    for im in images:
        h, w = im.image.shape[:2]
        assert (im.xy >= 0).all() and (im.xy[:, 0] < w).all() and (im.xy[:, 1] < h).all()
        assert set(im.labels.tolist()) <= set(range(len(NUCLS_CLASSES)))


@pytest.mark.slow
def test_evaluate_nucls_and_a_stress_test_on_real_tiles(brca_dir, tmp_path, monkeypatch, capsys):
    if not nucls_dir().is_dir():
        pytest.skip(
            f"{nucls_dir()} not found; it holds crops of NuCLS (CC0, sites.google.com/view/nucls): "
            "set MUSE_DATA to the folder holding nucls-subset/"
        )
    assert evaluate.main(["--data", "nucls", "--split", "test", "--json", str(tmp_path / "n.json")]) == 0
    row = next(iter(json.loads((tmp_path / "n.json").read_text())["rows"].values()))
    assert row["n_gt"] == sum(len(im.xy) for im in load_nucls() if im.name.startswith("test_"))
    assert row["det_recall"] > 0.5  # the shipped weights find most nuclei at 0.25 um/px
    monkeypatch.setattr(evaluate, "STRESS_SUITE", {"clean": "", "pale 0.8": "pale=0.8"})
    monkeypatch.setattr(evaluate, "load_split", lambda split: load_split(split)[:1])
    assert evaluate.main(["--split", "val", "--stress-suite", "--json", str(tmp_path / "s.json")]) == 0
    rows = json.loads((tmp_path / "s.json").read_text())["rows"]
    assert rows["pale 0.8"]["det_recall"] < rows["clean"]["det_recall"] - 0.2  # pale nuclei are missed
    assert "| pale 0.8 |" in capsys.readouterr().out
    assert evaluate.main(["--data", "nucls", "--stress-suite"]) == 2
    assert evaluate.main(["--data", "nucls", "--split", "val"]) == 2


@pytest.mark.parametrize("positions", ["hema", "blob"])
def test_evaluate_scores_the_label_free_detectors(tmp_path, positions):
    if not nucls_dir().is_dir():
        pytest.skip(
            f"{nucls_dir()} not found; it holds crops of NuCLS (CC0, sites.google.com/view/nucls): "
            "set MUSE_DATA to the folder holding nucls-subset/"
        )
    if positions == "blob":
        pytest.importorskip("skimage")
    args = ["--data", "nucls", "--positions", positions, "--split", "test", "--json", str(tmp_path / "h.json")]
    assert evaluate.main(args) == 0
    (name, row), *_ = json.loads((tmp_path / "h.json").read_text())["rows"].items()
    assert name == f"nucls {positions} clean" and row["det_recall"] > 0.5 and row["det_precision"] > 0.5
