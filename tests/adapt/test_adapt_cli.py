"""``muse-fast adapt`` refusals: one line on stderr, exit code 2, and nothing under the output names."""

from __future__ import annotations

import os
import shutil
import time

import numpy as np
import pytest
from conftest import NAMES, annotate
from qupath import point_set, rectangle, write_qupath

import muse_fast.cli as cli


def run(capsys, *args: str) -> tuple[int, str]:
    code = cli.main(["adapt", *map(str, args)])
    return code, capsys.readouterr().err.strip()


def refused(capsys, out, *args, expected: str) -> None:
    code, err = run(capsys, *args, "--out", out, "--quiet")
    assert code == 2, err
    assert err.count("\n") == 0 and err.startswith("muse-fast: error: ") and expected in err, err
    assert not out.exists() and not out.with_name(out.stem + ".report.json").exists()
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".partial")]


@pytest.fixture
def case(tmp_path, brca_tiles):
    """Two tiles copied to tmp with full QuPath exports; returns (images, annotation folder, out path)."""
    tiles = []
    for path, im in brca_tiles[:2]:
        shutil.copy(path, tmp_path / path.name)
        tiles.append((tmp_path / path.name, im))
    folder = tmp_path / "ann"
    return annotate(folder, tiles), folder, tmp_path / "adapted.pt", tiles


def test_input_without_annotations(capsys, case):
    images, folder, out, _ = case
    (folder / f"{images[1].stem}.geojson").unlink()
    refused(
        capsys, out, *images, "--annotations", folder, "--mpp", 0.5, expected=f"no annotations for {images[1].name}"
    )


def test_annotations_without_input(capsys, case):
    images, folder, out, _ = case
    refused(capsys, out, images[0], "--annotations", folder, "--mpp", 0.5, expected="annotations without an input")


def test_points_outside_the_image(capsys, case):
    images, folder, out, _ = case
    write_qupath(folder / f"{images[0].stem}.geojson", [point_set("Tumor", np.array([[5000.0, 10.0]]), [200, 0, 0])])
    refused(capsys, out, *images, "--annotations", folder, "--mpp", 0.5, expected="lie outside")


def test_unused_geometry_type_is_named(capsys, case):
    images, folder, out, _ = case
    odd = {"type": "Feature", "geometry": {"type": "GeometryCollection", "geometries": []}, "properties": {}}
    write_qupath(folder / f"{images[0].stem}.geojson", [odd])
    refused(capsys, out, *images, "--annotations", folder, "--mpp", 0.5, expected="'GeometryCollection'")


def test_class_with_too_few_examples_is_named(capsys, case):
    images, folder, out, tiles = case
    im = tiles[0][1]
    few = point_set("Necrosis", im.xy[:3], [50, 50, 50])
    rest = [point_set(n, im.xy[im.labels == c], [1, 2, 3]) for c, n in enumerate(NAMES)]
    write_qupath(folder / f"{images[0].stem}.geojson", [*rest, few])
    refused(capsys, out, *images, "--annotations", folder, "--mpp", 0.5, expected="'Necrosis' has 3")


def test_mixed_case_duplicate_class(capsys, case):
    images, folder, out, tiles = case
    write_qupath(folder / f"{images[0].stem}.geojson", [point_set("tumor", tiles[0][1].xy[:9], [1, 2, 3])])
    refused(capsys, out, *images, "--annotations", folder, "--mpp", 0.5, expected="differ only in case")


def test_no_resolution_and_no_mpp(capsys, case):
    images, folder, out, _ = case
    refused(capsys, out, *images, "--annotations", folder, expected="pass --mpp")


def test_existing_out_without_overwrite(capsys, case):
    images, folder, out, _ = case
    out.write_bytes(b"the user's file")
    code, err = run(capsys, *images, "--annotations", folder, "--mpp", 0.5, "--out", out, "--quiet")
    assert code == 2 and "--overwrite" in err and out.read_bytes() == b"the user's file"


def test_full_mode_needs_two_regions(capsys, case):
    images, folder, out, tiles = case
    im = tiles[0][1]
    h, w = im.image.shape[:2]
    write_qupath(
        folder / f"{images[0].stem}.geojson",
        [point_set(n, im.xy[im.labels == c], [1, 2, 3]) for c, n in enumerate(NAMES)] + [rectangle(0, 0, w, h)],
    )
    refused(
        capsys, out, *images, "--annotations", folder, "--mpp", 0.5, "--mode", "full", expected="at least 2 complete"
    )


def test_unknown_mode(capsys, case):
    images, folder, out, _ = case
    refused(capsys, out, *images, "--annotations", folder, "--mpp", 0.5, "--mode", "fast", expected="--mode 'fast'")


@pytest.mark.parametrize(
    "flag, value, expected",
    [("--engine", "fastest", "unknown engine 'fastest'"), ("--precision", "fp16", "fp16 runs on CUDA only")],
)
def test_engine_or_precision_that_cannot_run(capsys, case, flag, value, expected):
    images, folder, out, _ = case
    refused(capsys, out, *images, "--annotations", folder, "--mpp", 0.5, flag, value, expected=expected)


def test_two_inputs_with_one_stem_are_refused(capsys, case, tmp_path):
    """Two images named alike in two folders would both take <stem>.geojson: one of them with the other's points."""
    images, folder, out, _ = case
    (tmp_path / "other").mkdir()
    twin = shutil.copy(images[1], tmp_path / "other" / images[0].name)
    refused(capsys, out, images[0], twin, images[1], "--annotations", folder, "--mpp", 0.5, expected="would share")
    refused(capsys, out, images[0], images[0], images[1], "--annotations", folder, "--mpp", 0.5, expected="twice")


def test_a_folder_as_input_is_named(capsys, case, tmp_path):
    _, folder, out, _ = case
    refused(capsys, out, tmp_path, "--annotations", folder, "--mpp", 0.5, expected="is a folder; pass its images")


def test_an_out_folder_that_takes_no_file_is_refused_before_any_work(capsys, case, monkeypatch):
    """Found at the start, not after minutes of fine-tuning (root ignores permissions: the probe is made to fail)."""
    import muse_fast.adapt.run as adapt_run

    images, folder, out, _ = case
    read_only = PermissionError(30, "Read-only file system")
    monkeypatch.setattr(adapt_run, "new_file_refused", lambda folder, name: read_only)
    refused(capsys, out, *images, "--annotations", folder, "--mpp", 0.5, expected="cannot write in")


def test_an_interrupted_adapt_does_not_promise_a_resume(capsys, case, monkeypatch):
    """adapt starts again when rerun (it has no checkpoints): its interrupt line must not say it continues."""
    import muse_fast.adapt.run as adapt_run

    images, folder, out, _ = case

    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(adapt_run, "adapt", interrupted)
    code, err = run(capsys, *images, "--annotations", folder, "--mpp", 0.5, "--out", out, "--quiet")
    assert code == 130 and err == "muse-fast: interrupted; nothing was written under a final name", err


def test_out_in_the_annotations_folder_is_refused(capsys, case):
    """Its report (.json) would have been read as an orphan annotation file by every later run."""
    images, folder, _, _ = case
    refused(capsys, folder / "m.pt", *images, "--annotations", folder, "--mpp", 0.5, expected="in the --annotations")


def test_a_killed_adapt_leaves_no_temporary_file_behind_the_next(tmp_path):
    """kill -9 during the save leaves ``.adapted.pt.<pid>.partial`` (one temporary name, not one inside another);
    the next adapt that writes there removes it once it is an hour old, and never a temporary file of a process that
    still runs here or that was written within the hour (a process elsewhere may still be writing it)."""
    import subprocess

    from muse_fast.adapt import run as adapt_run
    from muse_fast.model.weights import load_weights

    gone = subprocess.Popen(["true"])
    gone.wait()
    out = tmp_path / "adapted.pt"
    dead = [tmp_path / f".adapted.pt.{gone.pid}.partial", tmp_path / f".adapted.report.json.{gone.pid}.partial"]
    dead.append(tmp_path / f"..adapted.pt.{gone.pid}.partial.{gone.pid}.partial")  # as adapt wrote before 2026-12-07
    live = tmp_path / f".adapted.pt.{os.getppid()}.partial"  # pytest's parent: running
    fresh = tmp_path / ".adapted.pt.4194999.partial"  # a pid unknown here, written just now: another container's
    for p in (*dead, live, fresh):
        p.write_bytes(b"half a file")
    for p in (*dead, live):
        os.utime(p, (time.time() - 7200, time.time() - 7200))  # two hours old
    model, meta = load_weights(None)
    adapt_run._write(out, model, meta, {"mode": "classes"}, overwrite=False)
    assert out.is_file() and load_weights(out)[1].classes == meta.classes
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [out.name, "adapted.report.json", live.name, fresh.name]
    )


def test_the_weights_are_written_into_the_staged_file_itself(tmp_path, monkeypatch):
    """Where a kill -9 would leave the weights half-written: the one hidden temporary name beside --out."""
    import torch

    from muse_fast.adapt import run as adapt_run
    from muse_fast.model.weights import load_weights

    seen = []
    monkeypatch.setattr(torch, "save", lambda payload, fh: seen.append(fh.name) or fh.write(b"x"))
    model, meta = load_weights(None)
    adapt_run._write(tmp_path / "adapted.pt", model, meta, {"mode": "classes"}, overwrite=False)
    assert seen == [str(tmp_path / f".adapted.pt.{os.getpid()}.partial")]


def test_the_printed_table_is_that_of_the_saved_classifier_and_prints_names_safely():
    """Full mode saves the classifier refitted outside the held-out regions: the table shows it, not classes mode's;
    class names are the user's text, printed without terminal controls."""
    from muse_fast.adapt.report import format_report

    def fit(macro, support, chosen, how):
        per_class = {"Tumor": {"precision": 0.5, "recall": 0.5, "f1": macro, "support": support}}
        per_class["\x1b[31mRed\nline"] = dict(per_class["Tumor"])
        scores = {"agreement": 0.5, "macro_f1": macro, "per_class": per_class}
        return {"chosen": chosen, "cross_validation": how, "scores": scores, "unmatched_points": 3}

    held = {"det_f1": 0.8, "macro_f1": 0.6}
    report = {"classes": fit(0.502, 14, "linear", "3 folds over inputs")}
    report["full"] = {"classifier": fit(0.563, 5, "mlp", "5 folds"), "held_out": {"base": held}, "chosen": "base"}
    report["full"]["classifier"]["unmatched_points"] = 2  # its own points: those outside the held-out regions
    report["full"]["held_out_regions"] = 1
    text = format_report(report)
    assert "macro F1 0.563; 2 of its annotated points" in text
    assert "mlp on the points outside the held-out regions (5 folds)" in text
    assert "0.502" not in text and "\x1b" not in text and "\\x1b[31mRed\\x0aline" in text
    assert len(text.splitlines()) == 5  # header, two classes, classifier, detection
    wide = fit(0.5, 9, "linear", "3 folds")
    wide["scores"]["per_class"] = {
        "腫瘍": wide["scores"]["per_class"]["Tumor"],
        "Tumor": wide["scores"]["per_class"]["Tumor"],
    }
    rows = format_report({"classes": wide}).splitlines()[:3]
    assert rows[1].index("0.500") == rows[2].index("0.500") - 2  # two wide letters fill four columns: aligned on screen
    report["full"]["classifier"] = {"kept_own_classifier": "too few points"}
    assert "macro F1 0.502" in format_report(report) and "too few points" in format_report(report)
