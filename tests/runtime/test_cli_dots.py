"""``muse-fast infer`` with the dot engine: the output folder's errors, cohorts (CSV lists, settings that changed)."""

import json
import logging

import numpy as np
import pytest
from dot_cli import build_dot_engine
from PIL import Image

import muse_fast.cli as cli

ARGS = ["--no-tissue-mask", "--batch-size", "2", "--quiet"]


@pytest.fixture(autouse=True)
def dots(monkeypatch):
    monkeypatch.setattr(cli, "_build_engine", build_dot_engine)


def _err(capsys) -> str:
    return capsys.readouterr().err.strip()


@pytest.mark.parametrize("where", ["file", "below a file", "proc"])
def test_an_unusable_out_folder_exits_2_with_one_line(small_dots, tmp_path, capsys, where):
    """Issue 13.5: --out naming a file or /proc/x raised FileExistsError or FileNotFoundError."""
    taken = tmp_path / "taken"
    taken.write_text("mine")
    out = {"file": taken, "below a file": taken / "sub", "proc": "/proc/muse-fast-test"}[where]
    assert cli.main(["infer", str(small_dots), "--out", str(out), *ARGS]) == 2
    err = _err(capsys)
    assert err.startswith("muse-fast: error:") and len(err.splitlines()) == 1 and "--out" in err, err
    assert taken.read_text() == "mine"


def test_a_csv_list_with_a_byte_order_mark(small_dots, tmp_path, capsys):
    """Issue 13.6: a list saved by Excel ('CSV UTF-8') failed on the column '\\ufeffpath'."""
    listing = tmp_path / "slides.csv"
    listing.write_text(f"path,mpp\n{small_dots},0.5\n", encoding="utf-8-sig")
    assert listing.read_bytes().startswith(b"\xef\xbb\xbf")
    assert cli.main(["infer", str(listing), "--out", str(tmp_path / "out"), *ARGS]) == 0
    assert (tmp_path / "out" / "dots.csv").exists()


def test_other_settings_on_a_finished_folder_are_refused_and_recorded(small_dots, tmp_path, capsys):
    """Issue 13.6: a rerun with another --threshold printed 'skipped' and kept the old results silently."""
    out = tmp_path / "out"
    assert cli.main(["infer", str(small_dots), "--out", str(out), *ARGS]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    _err(capsys)
    assert cli.main(["infer", str(small_dots), "--out", str(out), "--threshold", "0.5", *ARGS]) == 2
    err = _err(capsys)
    assert "decode.threshold 0.3 -> 0.5" in err and "--overwrite" in err and len(err.splitlines()) == 1, err
    assert cli.main(["infer", str(small_dots), "--out", str(out), *ARGS]) == 0 and _err(capsys).endswith("skipped")
    listing = tmp_path / "cohort.csv"
    listing.write_text(f"path\n{small_dots}\n{tmp_path / 'missing.tif'}\n")
    assert cli.main(["infer", str(listing), "--out", str(out), "--threshold", "0.5", *ARGS]) == 2
    slides = json.loads((out / "run_summary.json").read_text())["slides"]
    assert slides[0]["status"] == "failed" and "--overwrite" in slides[0]["error"]
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != "run_summary.json"} == before
    assert cli.main(["infer", str(small_dots), "--out", str(out), "--threshold", "0.5", "--overwrite", *ARGS]) == 0


def test_tta_runs_through_the_cli_and_is_never_mixed_with_plain_results(small_dots, tmp_path, capsys):
    """``--tta`` reaches the engine (flips undone: the dots stay put) and its results are kept apart on rerun."""
    plain, out = tmp_path / "plain", tmp_path / "out"
    assert cli.main(["infer", str(small_dots), "--out", str(plain), *ARGS]) == 0
    assert cli.main(["infer", str(small_dots), "--out", str(out), *ARGS]) == 0
    _err(capsys)
    assert cli.main(["infer", str(small_dots), "--out", str(out), "--tta", *ARGS]) == 2
    err = _err(capsys)
    assert "tta False -> True" in err and "--overwrite" in err and len(err.splitlines()) == 1, err
    assert cli.main(["infer", str(small_dots), "--out", str(plain), "--tta", "--embeddings", *ARGS]) == 2
    err = _err(capsys)
    assert "tta False -> True" in err and "embeddings" not in err, err  # only what changes the nuclei is named
    assert cli.main(["infer", str(small_dots), "--out", str(out), "--tta", "--overwrite", *ARGS]) == 0
    manifest = json.loads((out / "dots.manifest.json").read_text())
    assert "dots+tta" in json.dumps(manifest) and '"tta": true' in json.dumps(manifest)
    assert (out / "dots.csv").read_text() == (plain / "dots.csv").read_text()  # flip-symmetric dots do not move


def test_discarded_batches_are_said_in_one_info_line(small_dots, tmp_path, caplog):
    from dots import META, DotEngine

    from muse_fast.config import InferConfig
    from muse_fast.runtime.pipeline import run_slide

    cfg = InferConfig(out_dir=tmp_path, quiet=True, tissue_mask=False, batch_size=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_slide(small_dots, DotEngine(fail_at_call=3), META, cfg, {"engine": "dots"})
    caplog.set_level(logging.INFO, logger="muse_fast.runtime")
    assert run_slide(small_dots, DotEngine(), META, cfg, {"engine": "other"}).resumed_batches == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "muse_fast.runtime.shards"]
    assert lines == ["dots: discarding 2 saved batches computed for another file or other settings"]


def test_bench_counts_the_nuclei_that_infer_writes(small_dots, tmp_path, capsys):
    """Overlap duplicates are merged before ``bench`` counts: its count is the one in the output table."""
    out = tmp_path / "out"
    assert cli.main(["infer", str(small_dots), "--out", str(out), *ARGS]) == 0
    written = json.loads((out / "dots.manifest.json").read_text())["nuclei"]
    capsys.readouterr()
    assert cli.main(["bench", str(small_dots), "--batch-size", "2", "--no-tissue-mask"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["nuclei"] == written > 0
    assert result["tissue_mm2"] == pytest.approx(500 * 400 * 0.5**2 / 1e6)  # the whole slide, as infer counts it
    stages = result["stages"]
    assert set(stages["seconds"]) == {"tissue", "read", "model", "peak_decode", "writers"}
    assert all(v > 0 for k, v in stages["seconds"].items() if k != "tissue")  # every stage ran
    assert stages["tiles_run"] == result["tiles"] and sum(stages["share"].values()) == pytest.approx(1, abs=0.01)
    assert result["later_runs"] == []


def test_bench_repeat_runs_the_slide_again_in_the_process(small_dots, capsys):
    assert cli.main(["bench", str(small_dots), "--batch-size", "2", "--no-tissue-mask", "--repeat", "3"]) == 0
    later = json.loads(capsys.readouterr().out)["later_runs"]
    assert len(later) == 2 and all(r["end_to_end_s"] > 0 and 0 < r["pipeline_efficiency"] for r in later)
    assert cli.main(["bench", str(small_dots), "--repeat", "0"]) == 2
    assert "--repeat must be 1 or more" in capsys.readouterr().err


def _slides(small_dots, folder, *names):
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).write_bytes(small_dots.read_bytes())
    return folder


def test_an_input_is_never_an_output_of_the_same_run_even_with_overwrite(small_dots, tmp_path, capsys):
    """``infer d/a.tif d/a.overlay.png --out d --overwrite`` wrote a's overlay over the user's image, then ran it."""
    d = _slides(small_dots, tmp_path / "d", "a.tif")
    users = tmp_path / "d" / "a.overlay.png"
    Image.fromarray(np.full((40, 40, 3), 120, np.uint8)).save(users)
    before = users.read_bytes()
    assert cli.main(["infer", str(d / "a.tif"), str(users), "--out", str(d), "--overwrite", "--mpp", "0.5", *ARGS]) == 2
    err = _err(capsys)
    assert "a.overlay.png is an input of this run and the name of an output of a.tif" in err, err
    assert users.read_bytes() == before and sorted(p.name for p in d.iterdir()) == ["a.overlay.png", "a.tif"]


def test_outputs_named_one_by_one_are_left_out_and_a_users_image_with_an_output_suffix_is_taken(
    small_dots, tmp_path, capsys, caplog
):
    d = _slides(small_dots, tmp_path / "d", "x.tif")
    assert cli.main(["infer", str(d), "--out", str(d), *ARGS]) == 0
    ours = [d / "x.overlay.png", d / "x.density.png", d / "x.tissue.png"]
    ours = [p for p in ours if p.exists()]
    assert len(ours) >= 2
    from muse_fast.runtime.outputs import png_is_ours

    assert all(png_is_ours(p) for p in ours) and not png_is_ours(d / "x.tif")  # each says so in its Software text
    with caplog.at_level(logging.WARNING):  # a glob names the outputs too: they are not slides
        assert cli.main(["infer", *map(str, sorted(d.glob("*.png"))), str(d / "x.tif"), "--out", str(d), *ARGS]) == 0
    assert f"not taking {len(ours)} files that muse-fast wrote" in caplog.text
    assert not list(d.glob("*.overlay.overlay.png"))
    assert cli.main(["infer", str(ours[0]), "--out", str(d), *ARGS]) == 2
    assert "are muse-fast's outputs; pass the slides themselves" in _err(capsys)
    assert cli.main(["infer", str(d / "x.csv"), "--out", str(d), *ARGS]) == 2
    assert "x.csv is a nuclei table that muse-fast wrote, not a list of slides" in _err(capsys)
    users = tmp_path / "users"  # no slide b or c, no manifest, no Software text: the user's own images
    users.mkdir()
    Image.open(small_dots).convert("RGB").save(users / "b.tissue.png")
    Image.open(small_dots).convert("RGB").save(users / "c.overlay.png")
    from muse_fast.runtime.cohort import folder_slides

    assert [p.name for p in folder_slides(users)] == ["b.tissue.png", "c.overlay.png"]
    (users / "c.csv").write_text("x,y,class_id\n")  # an older version's overlay beside its table: not a slide
    assert [p.name for p in folder_slides(users)] == ["b.tissue.png"]


def test_folder_entries_that_are_no_readable_files_are_named(small_dots, tmp_path, caplog):
    import os

    from muse_fast.runtime.cohort import folder_slides

    d = _slides(small_dots, tmp_path / "d", "good.tif")
    (d / "gone.svs").symlink_to(tmp_path / "unmounted" / "slide.svs")
    (d / "dir.svs").mkdir()
    os.mkfifo(d / "fifo.tif")
    with caplog.at_level(logging.WARNING):
        assert [p.name for p in folder_slides(d)] == ["good.tif"]
    assert "not taking 3 entries that are not readable files (dir.svs, fifo.tif, gone.svs)" in caplog.text


def test_a_csv_header_as_spreadsheets_write_it(small_dots, tmp_path, caplog):
    """``path, mpp`` and ``Path,MPP`` lost the mpp column silently (slides then ran at their own resolution)."""
    from muse_fast.runtime.cohort import read_slide_list

    for header in ("path, mpp", "Path,MPP", " PATH , Mpp "):
        listing = tmp_path / "list.csv"
        listing.write_text(f"{header},patient\n{small_dots}, 0.5,p1\n")
        with caplog.at_level(logging.WARNING):
            jobs = read_slide_list(listing)
        assert [(j.path, j.mpp) for j in jobs] == [(small_dots, 0.5)], header
        assert "ignoring the columns 'patient'" in caplog.text


def test_a_slide_another_run_held_and_finished_is_not_recorded_as_failed(small_dots, tmp_path, monkeypatch):
    """Two cohort runs into one --out: each recorded the slide the other was running as failed, though it finished."""
    from muse_fast.runtime import cohort
    from muse_fast.runtime.lock import SlideLock

    d, out = _slides(small_dots, tmp_path / "in", "a.tif", "b.tif"), tmp_path / "out"
    out.mkdir()
    other = SlideLock(out, "b")
    other.__enter__()  # another run holds b
    real, seen = cohort.run_job, []

    def run_job(job, *args, **kwargs):
        summary = real(job, *args, **kwargs)
        seen.append((job.path.name, summary.status))
        if job.path.name == "b.tif" and summary.status == "failed":
            other.__exit__(None, None, None)  # ... and finishes it meanwhile
            assert real(job, *args, **kwargs).status == "done"
        return summary

    monkeypatch.setattr(cohort, "run_job", run_job)
    assert cli.main(["infer", str(d), "--out", str(out), "--overwrite", *ARGS]) == 0
    assert seen == [("a.tif", "done"), ("b.tif", "failed"), ("b.tif", "skipped")]  # kept, even with --overwrite
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["failed"] == 0 and [s["status"] for s in summary["slides"]] == ["done", "skipped"]
    assert summary["slides"][1]["nuclei"] > 0
