"""Damaged tiles in a real SVS are never silent: by default the slide fails in one line; with --skip-unreadable it
completes, lists the skipped regions and crosses them out on the overlay, and never reports nuclei from garbage."""

import json

import numpy as np
import pytest
from damaged_slides import damage_svs
from PIL import Image

from muse_fast.cli import main
from muse_fast.output.overlay import UNREADABLE_COLOUR


@pytest.fixture(scope="module")
def damaged_cmu(cmu_svs, tmp_path_factory):
    path = tmp_path_factory.mktemp("damaged") / "cmu-damaged.svs"
    return path, damage_svs(cmu_svs, path)


@pytest.fixture(scope="module")
def intact_run(cmu_svs, tmp_path_factory):
    out = tmp_path_factory.mktemp("intact")
    assert main(["infer", str(cmu_svs), "--out", str(out), "--quiet"]) == 0
    return _table(out / "CMU-1-Small-Region.csv")


def _table(path):
    data = np.genfromtxt(path, delimiter=",", names=True, dtype=None, encoding=None)
    return np.stack([data["x"], data["y"]], 1)


def _inside(xy, regions, margin=0.0):
    """Which points lie in any box ``[x, y, w, h]`` grown by ``margin`` (shrunk when negative)."""
    hit = np.zeros(len(xy), bool)
    for x, y, w, h in regions:
        hit |= (abs(xy[:, 0] - (x + w / 2)) < w / 2 + margin) & (abs(xy[:, 1] - (y + h / 2)) < h / 2 + margin)
    return hit


def test_default_fails_in_one_line_then_skip_unreadable_completes(damaged_cmu, intact_run, tmp_path, capsys):
    path, damaged_boxes = damaged_cmu
    out = tmp_path / "out"
    assert main(["infer", str(path), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "could not be decoded" in err[0] and "--skip-unreadable" in err[0], err
    assert not list(out.glob("cmu-damaged.*"))  # no output under a final name
    assert (out / ".cmu-damaged.partial").is_dir()  # finished batches kept for the rerun

    assert main(["infer", str(path), "--out", str(out), "--quiet", "--skip-unreadable"]) == 0
    assert "batches resumed" in capsys.readouterr().err
    geojson = json.loads((out / "cmu-damaged.geojson").read_text())
    manifest = json.loads((out / "cmu-damaged.manifest.json").read_text())
    regions = geojson["unreadable_regions"]
    assert regions and regions == manifest["unreadable_regions"]
    for bx, by, bw, bh in damaged_boxes:  # every damaged JPEG tile is covered by skipped regions
        corners = np.array([[bx + 1, by + 1], [bx + bw - 1, by + 1], [bx + 1, by + bh - 1], [bx + bw - 1, by + bh - 1]])
        assert _inside(corners, regions).all()

    got = _table(out / "cmu-damaged.csv")
    assert len(got) == len(geojson["features"])
    assert not _inside(got, damaged_boxes).any()  # no nucleus where the image data is garbage
    far = intact_run[~_inside(intact_run, regions, margin=48)]
    d = np.linalg.norm(far[:, None] - got[None], axis=-1).min(1)
    assert (d < 1.0).mean() > 0.99  # away from the damage, the same nuclei as the intact slide

    overlay = np.asarray(Image.open(out / "cmu-damaged.overlay.png").convert("RGB"))
    assert (overlay == UNREADABLE_COLOUR).all(-1).sum() > 100  # the skipped regions are crossed out


def test_a_cohort_records_the_skipped_regions(damaged_cmu, cmu_svs, tmp_path, capsys):
    path, _ = damaged_cmu
    listing = tmp_path / "slides.csv"
    listing.write_text(f"path\n{path}\n{cmu_svs}\n")
    out = tmp_path / "out"
    assert main(["infer", str(listing), "--out", str(out), "--quiet"]) == 2  # the damaged slide fails
    summary = json.loads((out / "run_summary.json").read_text())
    status = {s["slide"]: s for s in summary["slides"]}
    assert status[str(path)]["status"] == "failed" and "could not be decoded" in status[str(path)]["error"]
    assert status[str(cmu_svs)]["status"] == "done" and status[str(cmu_svs)]["unreadable_regions"] == []

    assert main(["infer", str(listing), "--out", str(out), "--quiet", "--skip-unreadable"]) == 0
    summary = json.loads((out / "run_summary.json").read_text())
    damaged = next(s for s in summary["slides"] if s["slide"] == str(path))
    assert damaged["status"] == "done" and damaged["unreadable_regions"]
    capsys.readouterr()
