"""``muse-fast infer`` end to end on real data, and its behaviour on bad input (exit 2, nothing written)."""

import csv
import json
import os
import signal

import numpy as np
import pytest
import torch

from muse_fast.cli import main
from muse_fast.model import create_model
from muse_fast.model.weights import DEFAULT_WEIGHTS, WeightsMeta, load_weights, save_weights


def _read_csv(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_infer_on_the_real_svs(cmu_svs, tmp_path):
    assert main(["infer", str(cmu_svs), "--out", str(tmp_path), "--quiet"]) == 0
    rows = _read_csv(tmp_path / "CMU-1-Small-Region.csv")
    geo = json.loads((tmp_path / "CMU-1-Small-Region.geojson").read_text())
    assert geo["type"] == "FeatureCollection" and len(geo["features"]) == len(rows)
    # A 1.1 x 1.5 mm tissue region at 20x holds well over a thousand nuclei.
    assert len(rows) > 500
    xy = np.array([[float(r["x"]), float(r["y"])] for r in rows])
    assert (xy >= 0).all() and (xy[:, 0] < 2220).all() and (xy[:, 1] < 2967).all()
    # No duplicates from overlapping tiles: no two nuclei closer than 2 px.
    from scipy.spatial import cKDTree

    assert len(cKDTree(xy).query_pairs(2.0)) == 0
    feat = geo["features"][0]
    assert feat["geometry"]["type"] == "Point"
    assert feat["properties"]["objectType"] == "detection"
    assert feat["properties"]["classification"]["name"] in {"lymphocyte", "tumor", "stromal"}
    assert {r["class_name"] for r in rows} <= {"lymphocyte", "tumor", "stromal"}
    names = sorted(p.name for p in tmp_path.iterdir())
    suffixes = ("csv", "density.png", "geojson", "manifest.json", "overlay.png", "tissue.png")
    expected = ["CMU-1-Small-Region." + s for s in suffixes]
    assert [n for n in names if not n.endswith(".parquet")] == expected


def test_infer_on_a_png_tile_needs_mpp(brca_dir, tmp_path, capsys):
    png = sorted((brca_dir / "images").glob("*.png"))[0]
    assert main(["infer", str(png), "--out", str(tmp_path / "a"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--mpp" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "a").exists()  # the refused run removed the folder it had created
    assert main(["infer", str(png), "--out", str(tmp_path / "b"), "--mpp", "0.5", "--quiet"]) == 0
    rows = _read_csv(tmp_path / "b" / f"{png.stem}.csv")
    assert len(rows) > 20


def test_infer_with_tta_finds_the_same_nuclei_on_a_real_tile(brca_dir, tmp_path):
    png = sorted((brca_dir / "images").glob("*.png"))[0]
    runs = {}
    for name, extra in (("plain", []), ("tta", ["--tta"])):
        args = ["infer", str(png), "--out", str(tmp_path / name), "--mpp", "0.5", "--precision", "fp32", "--quiet"]
        assert main(args + extra) == 0
        rows = _read_csv(tmp_path / name / f"{png.stem}.csv")
        runs[name] = np.array([[float(r["x"]), float(r["y"])] for r in rows])
    plain, tta = runs["plain"], runs["tta"]
    from scipy.spatial import cKDTree

    distance, _ = cKDTree(plain).query(tta)
    assert not np.array_equal(plain, tta)  # the flipped passes change the scores
    assert abs(len(tta) - len(plain)) < 0.15 * len(plain)
    assert np.mean(distance < 3.0) > 0.85  # flips undone: the nuclei stay where the plain pass puts them


@pytest.mark.parametrize("case", ["missing", "text", "empty", "suffix"])
def test_bad_slides_exit_2_and_write_nothing(tmp_path, capsys, case):
    path = {
        "missing": tmp_path / "no.svs",
        "text": tmp_path / "t.svs",
        "empty": tmp_path / "e.svs",
        "suffix": tmp_path / "s.docx",
    }[case]
    if case == "text":
        path.write_text("hello\n" * 100)
    elif case != "missing":
        path.write_bytes(b"" if case == "empty" else b"PK\x03\x04")
    out = tmp_path / "out" / "deeper"
    assert main(["infer", str(path), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("muse-fast: error:") and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()  # nor the folders it created for --out


def test_a_refused_run_keeps_an_out_folder_it_did_not_create(tmp_path, capsys):
    path, out = tmp_path / "t.svs", tmp_path / "out"
    path.write_text("hello\n" * 100)
    out.mkdir()
    assert main(["infer", str(path), "--out", str(out), "--quiet"]) == 2
    assert out.is_dir()


def test_out_dir_for_run_removes_only_the_empty_folders_it_created(tmp_path):
    from muse_fast.output.folder import out_dir_for_run

    with pytest.raises(KeyboardInterrupt), out_dir_for_run(tmp_path / "a" / "b" / "c"):
        raise KeyboardInterrupt
    assert not (tmp_path / "a").exists()
    with pytest.raises(RuntimeError), out_dir_for_run(tmp_path / "a" / "b" / "c") as out:
        (out / "checkpoint").write_text("kept to resume")
        raise RuntimeError
    assert (tmp_path / "a" / "b" / "c" / "checkpoint").read_text() == "kept to resume"
    with pytest.raises(RuntimeError), out_dir_for_run(tmp_path / "x" / "y"):
        (tmp_path / "x" / "users_file").write_text("not ours")  # appeared beside the new folder meanwhile
        raise RuntimeError
    assert not (tmp_path / "x" / "y").exists() and (tmp_path / "x" / "users_file").exists()
    with out_dir_for_run(tmp_path / "ok" / "fine") as out:
        pass
    assert out.is_dir()
    with pytest.raises(RuntimeError), out_dir_for_run(tmp_path / "dd" / "new" / ".." / "out"):
        raise RuntimeError  # mkdir made dd/new as well as dd/out: both gone
    assert not (tmp_path / "dd").exists()


def test_weights_that_do_not_fit_exit_2(cmu_svs, tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    assert main(["infer", str(cmu_svs), "--out", str(tmp_path / "o"), "--weights", str(bad), "--quiet"]) == 2
    assert "weights" in capsys.readouterr().err
    other = tmp_path / "other.pt"
    _, meta = load_weights()
    torch.save(
        {
            "model": "muse_vit_t16",
            "classes": ["a", "b"],
            "mpp": 0.5,
            "tile_size": 224,
            "state_dict": {"backbone.encoder.encoder.cls_token": torch.zeros(1, 1, 8)},
        },
        other,
    )
    assert main(["infer", str(cmu_svs), "--out", str(tmp_path / "o"), "--weights", str(other), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "do not fit" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_weights_round_trip(tmp_path):
    model = create_model("muse_vit_t16", num_classes=2)
    meta = WeightsMeta("muse_vit_t16", ("a", "b"), 0.25, 224, {"lr": 1.0})
    save_weights(tmp_path / "w.pt", model, meta, half=True)
    loaded, meta2 = load_weights(tmp_path / "w.pt")
    assert meta2 == meta
    for (k, v), v2 in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.allclose(v.float(), v2.float(), atol=1e-2, rtol=1e-3), k


def test_default_weights_ship_with_the_package():
    assert DEFAULT_WEIGHTS.is_file()
    _, meta = load_weights()
    assert meta.classes == ("lymphocyte", "tumor", "stromal") and meta.mpp == 0.5


@pytest.mark.parametrize(
    "flags, says",
    [
        (["--threshold", "2"], "--threshold must be a nucleus score between 0 and 1"),
        (["--threshold", "nan"], "--threshold must be a nucleus score between 0 and 1"),
        (["--threshold", "-1"], "--threshold must be a nucleus score between 0 and 1"),
        (["--threshold", "0"], "--threshold must be a nucleus score between 0 and 1"),
        (["--mpp", "inf"], "--mpp must be a positive, finite number"),
        (["--mpp", "nan"], "--mpp must be a positive, finite number"),
        (["--mpp", "0"], "--mpp must be a positive, finite number"),
        (["--workers", "0"], "--workers must be at least 1"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--batch-size", "1000000"], "or less (the default is 16)"),
        (["--workers-per-node", "2"], "--workers-per-node applies to --ray runs only"),
        (["--ray", ""], "--ray needs 'auto' or a head address"),
    ],
)
def test_bad_parameters_exit_2_with_one_line(tmp_path, capsys, flags, says):
    """Issue 13.5/13.6: these were accepted (threshold, batch size) or ended in a traceback (mpp inf)."""
    slide = tmp_path / "any.svs"
    assert main(["infer", str(slide), "--out", str(tmp_path / "out"), "--quiet", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("muse-fast: error:") and says in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_weights_without_a_valid_mpp_exit_2(tmp_path, capsys):
    """Issue 13.5: weights recording mpp 0 ended in ZeroDivisionError."""
    bad = tmp_path / "mpp0.pt"
    meta = WeightsMeta("muse_vit_t16", ("a", "b", "c"), 0.0, 224)
    save_weights(bad, create_model("muse_vit_t16", num_classes=3), meta)
    assert main(["infer", str(tmp_path / "x.svs"), "--out", str(tmp_path / "o"), "--weights", str(bad), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "record mpp 0.0" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_batch_memory_is_said_and_bounded():
    from muse_fast.errors import ConfigError
    from muse_fast.runtime.budget import batch_bytes, check_batch_size

    total = 16 * 2**30
    assert check_batch_size(16, 224, "cpu", total) is None
    note = check_batch_size(300, 224, "cpu", total)
    assert note.startswith("--batch-size 300 will use about 2.9 GB of 16.0 GB RAM")
    with pytest.raises(ConfigError, match=r"needs about 976\.6 GB .* use --batch-size 819 or less"):
        check_batch_size(100000, 224, "cpu", total)
    assert batch_bytes(4, 448) == 4 * batch_bytes(4, 224)


def test_infer_defaults_to_auto_unless_the_site_pins_an_engine(monkeypatch):
    """``--engine`` is auto by default; ``$MUSE_FAST_ENGINE`` pins another (the test suite pins torch)."""
    from muse_fast.cli import build_parser

    monkeypatch.delenv("MUSE_FAST_ENGINE", raising=False)
    assert build_parser().parse_args(["infer", "s.svs", "--out", "o"]).engine == "auto"
    monkeypatch.setenv("MUSE_FAST_ENGINE", "onnx")
    assert build_parser().parse_args(["infer", "s.svs", "--out", "o"]).engine == "onnx"
    assert build_parser().parse_args(["infer", "s.svs", "--out", "o", "--engine", "torch"]).engine == "torch"


class _SignalOnThirdWrite:
    """A file that sends this process SIGINT during torch.save's third write, as Ctrl-C at that moment would."""

    def __init__(self, fh):
        self.fh, self.writes = fh, 0

    def write(self, data):
        self.writes += 1
        if self.writes == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return self.fh.write(data)

    def flush(self):
        self.fh.flush()


def test_ctrl_c_while_weights_are_saved_is_an_interrupt_and_leaves_no_file(tmp_path, monkeypatch):
    """torch.save turned a KeyboardInterrupt raised inside its writer into 'RuntimeError: ... unexpected pos'."""
    from contextlib import contextmanager

    from muse_fast.model import weights

    real = weights.atomic_write

    @contextmanager
    def interrupted(path, mode):
        with real(path, mode) as fh:
            yield _SignalOnThirdWrite(fh)

    monkeypatch.setattr(weights, "atomic_write", interrupted)
    # Ctrl-C as a terminal gives it (a job started in the background of a script starts with SIGINT ignored)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        model, meta = load_weights()
        with pytest.raises(KeyboardInterrupt):
            save_weights(tmp_path / "w.pt", model, meta, half=True)
        assert list(tmp_path.iterdir()) == []
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back
    finally:
        signal.signal(signal.SIGINT, previous)
    monkeypatch.setattr(weights, "atomic_write", real)
    save_weights(tmp_path / "w.pt", model, meta, half=True)  # and an uninterrupted save still works
    assert load_weights(tmp_path / "w.pt")[1].classes == meta.classes
