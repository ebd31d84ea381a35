"""``muse-fast infer`` writes, replaces or removes only files it made. Each test recreates an attack on real files: the
user's files under output names, links and special files at output, lock and checkpoint names, the output folder as
input, damaged outputs, and slide or class names made to hijack a terminal or a spreadsheet."""

import csv
import json
import logging
import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from dot_cli import build_dot_engine
from dots import DotEngine
from PIL import Image

import muse_fast.cli as cli
from muse_fast.config import InferConfig
from muse_fast.errors import InputError
from muse_fast.model.weights import WeightsMeta
from muse_fast.output.atomic import StagedFiles
from muse_fast.output.text import PrintableFormatter, csv_cell, printable
from muse_fast.output.writers import CSVWriter
from muse_fast.runtime import seams
from muse_fast.runtime.cohort import collect_jobs, listed_outputs
from muse_fast.runtime.lock import is_locked
from muse_fast.runtime.ownership import planned_outputs
from muse_fast.runtime.predict import Nuclei

ARGS = ["--no-tissue-mask", "--batch-size", "2", "--quiet"]
USERS = ["s1.h5ad", "s1.tissue.png", "s1.geojson", "s1.csv", "s1.overlay.png"]  # what the outside tester had there


@pytest.fixture(autouse=True)
def dots(monkeypatch):
    monkeypatch.setattr(cli, "_build_engine", build_dot_engine)


@pytest.fixture(scope="module")
def s1(brca_dir, tmp_path_factory) -> Path:
    """``s1.png``: a 240 x 240 crop of a BRCA-M2C image (run at --mpp 0.5: four tiles)."""
    source = sorted((brca_dir / "images").glob("*.png"))[0]
    path = tmp_path_factory.mktemp("s1") / "s1.png"
    Image.open(source).convert("RGB").crop((0, 0, 240, 240)).save(path)
    return path


def _infer(slide: Path, out: Path, *extra: str) -> int:
    return cli.main(["infer", str(slide), "--out", str(out), "--mpp", "0.5", *ARGS, *extra])


def _err(capsys) -> str:
    return capsys.readouterr().err.strip()


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _users_files(folder: Path) -> dict[str, bytes]:
    folder.mkdir()
    for name in USERS:
        (folder / name).write_bytes(f"the user's own {name}\n".encode())
    return _files(folder)


def _interrupt_at(monkeypatch, step: str) -> None:
    def hook(reached: str) -> None:
        if reached == step:
            raise KeyboardInterrupt

    monkeypatch.setattr(seams, "HOOK", hook)


# --- ownership -------------------------------------------------------------------------------------------------------


def test_the_users_files_under_output_names_are_refused_and_kept(s1, tmp_path, capsys):
    """The outside tester's attack: ``infer s1.png --out DIR`` deleted the user's s1.h5ad and s1.tissue.png and
    overwrote s1.geojson, s1.csv and s1.overlay.png, exit 0."""
    out = tmp_path / "DIR"
    before = _users_files(out)
    assert _infer(s1, out) == 2
    err = _err(capsys)
    assert len(err.splitlines()) == 1 and "--overwrite" in err, err
    assert all(name in err for name in ("s1.geojson", "s1.csv", "s1.overlay.png")), err
    assert sorted(os.listdir(out)) == sorted(before) and _files(out) == before  # nothing written, nothing hidden


def test_overwrite_replaces_the_users_files_only_with_complete_ones(s1, tmp_path, capsys, caplog, monkeypatch):
    out = tmp_path / "DIR"
    before = _users_files(out)
    _interrupt_at(monkeypatch, "staged")  # every new file complete under its temporary name, none renamed yet
    assert _infer(s1, out, "--overwrite") == 130
    assert {k: v for k, v in _files(out).items()} == before
    monkeypatch.setattr(seams, "HOOK", seams._no_hook)
    assert _infer(s1, out, "--overwrite") == 0
    assert "replacing s1.geojson, s1.csv, s1.overlay.png, not written by muse-fast" in caplog.text
    after = _files(out)
    assert after["s1.csv"].startswith(b"x,y,class_id,class_name") and after["s1.geojson"].startswith(b'{"type"')
    assert Image.open(out / "s1.overlay.png").size[0] == 240
    for name in ("s1.h5ad", "s1.tissue.png"):  # this run writes no such file: the user's stay, untouched
        assert after[name] == before[name]
    manifest = json.loads((out / "s1.manifest.json").read_text())
    planned = planned_outputs("s1", InferConfig(out_dir=out), tissue_mask=False)  # what the check covered
    assert set(manifest["outputs"]) | {"s1.manifest.json"} == planned  # is all that was written
    assert _infer(s1, out) == 0 and _err(capsys).endswith("skipped")  # done; the user's two files change nothing
    assert _files(out) == after


def test_a_run_stopped_while_renaming_knows_its_files_after_a_settings_change(small_dots, tmp_path, monkeypatch):
    """The record of our files outlives the renames, and checkpoints discarded for other settings."""
    out = tmp_path / "out"
    _interrupt_at(monkeypatch, "rename:csv")  # dots.geojson is final, no manifest yet
    assert _infer(small_dots, out) == 130
    _interrupt_at(monkeypatch, "shard:1")  # other settings: the saved batches are discarded, the record is kept
    assert _infer(small_dots, out, "--threshold", "0.5") == 130
    monkeypatch.setattr(seams, "HOOK", seams._no_hook)
    assert _infer(small_dots, out, "--threshold", "0.5") == 0
    manifest = json.loads((out / "dots.manifest.json").read_text())
    assert manifest["fingerprint"]["settings"]["decode"]["threshold"] == 0.5 and "dots.geojson" in manifest["outputs"]


# --- only regular files ----------------------------------------------------------------------------------------------


def _make(path: Path, what: str) -> None:
    """A FIFO, folder, socket or device node at ``path``."""
    if what == "fifo":
        os.mkfifo(path)
    elif what == "folder":
        path.mkdir()
        (path / "keep.txt").write_text("the user's\n")
    elif what == "socket":
        sock = socket.socket(socket.AF_UNIX)
        cwd = os.getcwd()
        os.chdir(path.parent)  # a relative name: socket paths are limited to 107 bytes
        try:
            sock.bind(path.name)
        finally:
            os.chdir(cwd)
            sock.close()
    else:
        try:
            os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))  # /dev/null's numbers
        except PermissionError:
            pytest.skip("device nodes need CAP_MKNOD (root)")


def _type(path: Path) -> int:
    return stat.S_IFMT(os.lstat(path).st_mode)


WHERE = ["dots.csv", "dots.manifest.json", ".dots.lock", ".dots.partial", ".dots.geojson.PID.partial"]
KINDS = ["symlink", "fifo", "folder", "socket", "device"]


@pytest.mark.parametrize("what", KINDS)
@pytest.mark.parametrize("where", WHERE)
def test_links_and_special_files_at_our_names_are_refused_before_any_work(small_dots, tmp_path, capsys, where, what):
    """A lock linked to a victim was truncated to the run's pid; a `.partial` link gave a traceback; output names that
    were device nodes or FIFOs were replaced by regular files."""
    if where == ".dots.partial" and what == "folder":
        pytest.skip("a folder is what the checkpoint name should be")
    out, victim = tmp_path / "out", tmp_path / "victim" / "precious.txt"
    out.mkdir()
    victim.parent.mkdir()
    victim.write_text("precious\n")
    path = out / where.replace("PID", str(os.getpid()))
    if what == "symlink":
        os.symlink(victim.parent if where == ".dots.partial" else victim, path)
    else:
        _make(path, what)
    kind = _type(path)
    assert _infer(small_dots, out) == 2
    err = _err(capsys)
    assert len(err.splitlines()) == 1 and path.name in err and "--out" in err, err
    assert ("link" if what == "symlink" else "not a regular file" if where != ".dots.partial" else path.name) in err
    assert _type(path) == kind and victim.read_text() == "precious\n" and os.listdir(victim.parent) == ["precious.txt"]
    assert sorted(p.name for p in out.iterdir()) == [path.name]  # nothing written, no lock or checkpoints left
    if where == ".dots.lock":
        assert not is_locked(out, "dots")  # the probe neither blocks on a FIFO nor follows a link


def test_a_lock_hard_linked_to_a_victim_is_refused_and_the_victim_kept(small_dots, tmp_path, capsys):
    out, victim = tmp_path / "out", tmp_path / "precious.txt"
    out.mkdir()
    victim.write_text("precious\n")
    os.link(victim, out / ".dots.lock")
    assert _infer(small_dots, out) == 2
    err = _err(capsys)
    assert len(err.splitlines()) == 1 and ".dots.lock" in err and "hard links" in err, err
    assert victim.read_text() == "precious\n" and os.stat(victim).st_nlink == 2


def test_a_run_summary_that_is_not_ours_is_refused_before_any_work(small_dots, tmp_path, capsys):
    other = tmp_path / "other.tif"
    shutil.copy(small_dots, other)
    out = tmp_path / "out"
    out.mkdir()
    (out / "run_summary.json").write_text("my notes\n")
    cohort = ["infer", str(small_dots), str(other), "--out", str(out), "--mpp", "0.5", *ARGS]
    assert cli.main(cohort) == 2
    err = _err(capsys)
    assert len(err.splitlines()) == 1 and "run_summary.json" in err and "--overwrite" in err, err
    assert _files(out) == {"run_summary.json": b"my notes\n"}
    assert cli.main([*cohort, "--overwrite"]) == 0
    assert json.loads((out / "run_summary.json").read_text())["failed"] == 0
    os.unlink(out / "run_summary.json")
    os.mkfifo(out / "run_summary.json")
    assert cli.main([*cohort, "--overwrite"]) == 2 and "FIFO" in _err(capsys)
    assert stat.S_ISFIFO(os.lstat(out / "run_summary.json").st_mode)


# --- inputs are never our outputs -----------------------------------------------------------------------------------


def test_out_equal_to_the_input_folder_never_takes_its_own_outputs_for_slides(s1, tmp_path, capsys):
    """Run twice with --out the input folder, the second run processed its own s1.overlay.png as a slide."""
    folder = tmp_path / "slides"
    folder.mkdir()
    shutil.copy(s1, folder / "s1.png")
    assert cli.main(["infer", str(folder), "--out", str(folder), "--mpp", "0.5", *ARGS]) == 0
    first = _files(folder)
    assert "s1.overlay.png" in first and "s1.csv" in listed_outputs(folder) <= set(first)
    assert [j.path.name for j in collect_jobs([folder])] == ["s1.png"]
    _err(capsys)
    assert cli.main(["infer", str(folder), "--out", str(folder), "--mpp", "0.5", *ARGS]) == 0
    assert _err(capsys) == "s1.png: skipped"
    assert _files(folder) == first  # no s1.overlay.geojson, no s1.overlay.overlay.png
    for name in set(first) - {"s1.overlay.png"}:
        os.unlink(folder / name)  # only a muse-fast image is left
    with pytest.raises(InputError, match="holds no slides .*muse-fast's outputs"):
        collect_jobs([folder])


def test_a_file_listed_by_a_manifest_is_never_a_slide(small_dots, tmp_path):
    out = tmp_path / "out"
    assert _infer(small_dots, out) == 0
    (out / "dots.overlay.png").rename(out / "thumb.png")  # listed under a name without our suffixes
    manifest = json.loads((out / "dots.manifest.json").read_text())
    manifest["outputs"]["thumb.png"] = manifest["outputs"].pop("dots.overlay.png")
    (out / "dots.manifest.json").write_text(json.dumps(manifest))
    shutil.copy(small_dots, out / "dots.tif")
    assert [j.path.name for j in collect_jobs([out])] == ["dots.tif"]


# --- integrity ------------------------------------------------------------------------------------------------------


def _truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(size)


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x20
    path.write_bytes(bytes(data))


DAMAGE = {
    "empty csv": ("dots.csv", lambda p: _truncate(p, 0), "is 0 bytes"),
    "100-byte geojson": ("dots.geojson", lambda p: _truncate(p, 100), "is 100 bytes"),
    "flipped byte": ("dots.geojson", lambda p: _flip(p, 1000), "changed since it was written"),
    "flipped tail": ("dots.overlay.png", lambda p: _flip(p, p.stat().st_size - 20), "changed since it was written"),
    "link": ("dots.csv", lambda p: (p.unlink(), p.symlink_to(p.parent.parent / "elsewhere.csv")), "not a regular"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_short_or_damaged_output_reruns_the_slide(small_dots, tmp_path, capsys, caplog, damage):
    """An output truncated to 0 or 100 bytes was still skipped as done."""
    name, hurt, why = DAMAGE[damage]
    out = tmp_path / "out"
    assert _infer(small_dots, out) == 0
    reference = _files(out)
    (tmp_path / "elsewhere.csv").write_bytes(reference["dots.csv"])
    hurt(out / name)
    _err(capsys)
    code = _infer(small_dots, out)
    err = _err(capsys)
    if damage == "link":  # ours by the manifest, but a link now: refused, never followed or replaced
        assert code == 2 and "symbolic link" in err and (out / name).is_symlink(), err
        return
    assert code == 0 and not err.endswith("skipped"), err
    assert f"dots.tif: {name} {why}" in caplog.text and "running it again" in caplog.text, caplog.text
    assert _files(out) == reference


def test_a_manifest_without_digests_is_checked_on_sizes(small_dots, tmp_path, capsys, caplog):
    """Manifests written before digests were recorded: same size counts as done, another size reruns the slide."""
    out = tmp_path / "out"
    assert _infer(small_dots, out) == 0
    manifest = json.loads((out / "dots.manifest.json").read_text())
    assert set(manifest.pop("digests")) == set(manifest["outputs"])
    (out / "dots.manifest.json").write_text(json.dumps(manifest))
    _err(capsys)
    assert _infer(small_dots, out) == 0 and _err(capsys) == "dots.tif: skipped"
    _truncate(out / "dots.csv", 100)
    assert _infer(small_dots, out) == 0 and not _err(capsys).endswith("skipped")
    assert "dots.csv is 100 bytes, not the" in caplog.text


# --- text hygiene ---------------------------------------------------------------------------------------------------

HOSTILE = ("\x1b[2J\x1b]0;owned\x07red", '=HYPERLINK("http://x","y")', "-2+3")


def test_hostile_slide_and_class_names_reach_no_terminal_and_no_formula(small_dots, tmp_path, capsys, monkeypatch):
    """Escape sequences in names were printed raw; class names like =HYPERLINK(...) went into the CSV unescaped."""
    meta = WeightsMeta("dots", HOSTILE, 0.5, 224)
    monkeypatch.setattr(cli, "_build_engine", lambda *a, **k: (DotEngine(), meta, "dots"))
    slide = tmp_path / "in" / "dots\x1b[31m\u202e.tif"
    slide.parent.mkdir()
    shutil.copy(small_dots, slide)
    out = tmp_path / "out"
    assert cli.main(["infer", str(slide), "--out", str(out), "--no-tissue-mask", "--batch-size", "2"]) == 0  # a bar
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err and "\u202e" not in err, repr(err)
    assert "dots\\x1b[31m\\u202e.tif: " in err and "\\x1b[2J\\x1b]0;owned\\x07red " in err, err
    stem = slide.name[: -len(".tif")]
    with open(out / f"{stem}.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    names = {row["class_name"] for row in rows}
    assert names == {HOSTILE[0], "'" + HOSTILE[1], "'" + HOSTILE[2]}
    assert all(float(row["x"]) >= 0 and float(row["score"]) > 0 for row in rows)
    geojson = json.loads((out / f"{stem}.geojson").read_text())
    assert {f["properties"]["classification"]["name"] for f in geojson["features"]} == set(HOSTILE)
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow not installed (pip install -e .[dev])")
    assert set(pq.read_table(out / f"{stem}.parquet").column("class_name").to_pylist()) == set(HOSTILE)


@pytest.mark.slow  # a second process: about 10 s, mostly imports
def test_log_lines_escape_control_characters_on_a_real_terminal_path(small_dots, tmp_path):
    """The CLI's log handler (not pytest's) escapes names: a damaged output's warning names the hostile slide."""
    slide = tmp_path / "dots\x1b]0;owned\x07.tif"
    shutil.copy(small_dots, slide)
    out = tmp_path / "out"
    assert _infer(slide, out) == 0
    _truncate(out / "dots\x1b]0;owned\x07.csv", 10)
    cmd = [sys.executable, str(Path(__file__).parent / "dot_cli.py"), "infer", str(slide), "--out", str(out)]
    proc = subprocess.run([*cmd, "--mpp", "0.5", *ARGS], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stderr and "\x07" not in proc.stderr, repr(proc.stderr)
    assert "muse-fast: dots\\x1b]0;owned\\x07.tif: dots\\x1b]0;owned\\x07.csv is 10 bytes" in proc.stderr
    record = logging.LogRecord("muse_fast.runtime", logging.WARNING, "", 0, "%s: bad", ("a\x1b[2Jb",), None)
    assert PrintableFormatter("muse-fast: %(message)s").format(record) == "muse-fast: a\\x1b[2Jb: bad"


def test_csv_text_cells_are_neutralised_and_numbers_are_not(tmp_path):
    classes = ("=1+1", "+cmd|calc", "-neg", "@SUM(A1)", "\tlead", "\rcr", "plain", "a=b")
    xy = np.array([[-5.0, -1.25]] + [[float(i), 2.0] for i in range(1, len(classes))])
    nuclei = Nuclei(xy, np.full(len(classes), 0.5, np.float32), np.arange(len(classes)), np.ones(len(classes), "f4"))
    path = tmp_path / "t.csv"
    with StagedFiles() as staged:
        writer = CSVWriter(path, staged.add(path), classes)
        writer.write(nuclei)
        writer.close()
        staged.commit()
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[1] == ["-5.00", "-1.25", "0", "'=1+1", "0.5000", "1.0000"]
    assert [r[3] for r in rows[1:]] == ["'=1+1", "'+cmd|calc", "'-neg", "'@SUM(A1)", "'\tlead", "'\rcr", "plain", "a=b"]
    assert csv_cell("") == "" and printable("ok é 漢") == "ok é 漢" and printable("a\nb\x9b") == "a\\x0ab\\x9b"


@pytest.mark.parametrize("links", [True, False], ids=["hard-links", "no-hard-links"])
def test_a_commit_without_replace_keeps_a_file_that_appeared_meanwhile(tmp_path, monkeypatch, links):
    """``adapt`` without --overwrite: a file made at the final name after the start-up check (by the user or a second
    run) is kept, the run fails in one line, and what this commit had already put in place is taken back."""
    from muse_fast.errors import OutputError

    if not links:  # a file system without hard links: the check and the rename are two steps
        monkeypatch.setattr(os, "link", lambda *a: (_ for _ in ()).throw(PermissionError(1, "no links here")))
    first, second = tmp_path / "w.pt", tmp_path / "w.report.json"

    def user_saves(final):
        if final == second:
            second.write_text("my notes")

    with StagedFiles() as staged, pytest.raises(OutputError, match="appeared while this ran"):
        staged.add(first).write_bytes(b"weights")
        staged.add(second).write_bytes(b"report")
        staged.commit(user_saves, replace=False)
    assert second.read_text() == "my notes" and not first.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.report.json"]  # no temporary file left either
    with StagedFiles() as staged:  # nothing in the way: both in place
        staged.add(first).write_bytes(b"weights")
        assert staged.commit(replace=False) == [first] and first.read_bytes() == b"weights"


def test_a_users_files_at_the_checkpoint_or_lock_name_are_kept(tmp_path, capsys):
    """A folder named like the checkpoint folder, holding a file muse-fast did not write, and a file of the user's at
    the lock's name: both were removed by a run that then succeeded (exit 0). Now: one line, exit 2, both kept; a
    checkpoint folder of ours with nothing else in it still goes."""
    image = tmp_path / "s.png"
    Image.fromarray(np.tile(np.array([200, 100, 160], np.uint8), (64, 64, 1))).save(image)  # stained: not glass
    out = tmp_path / "out"
    (out / ".s.partial").mkdir(parents=True)
    (out / ".s.partial" / "notes.txt").write_text("mine")
    assert cli.main(["infer", str(image), "--out", str(out), "--mpp", "0.5", *ARGS]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds notes.txt, which muse-fast did not write" in err and err.count("\n") == 0, err
    assert (out / ".s.partial" / "notes.txt").read_text() == "mine"
    shutil.rmtree(out)
    out.mkdir()
    (out / ".s.lock").write_text("mine")
    assert cli.main(["infer", str(image), "--out", str(out), "--mpp", "0.5", *ARGS]) == 2
    assert "is a file muse-fast did not write" in capsys.readouterr().err
    assert (out / ".s.lock").read_text() == "mine"
    (out / ".s.lock").write_text("12345\n")  # a lock a killed run left: taken over, then removed
    (out / ".s.partial").mkdir()
    (out / ".s.partial" / "batch_000000.npz").write_bytes(b"")  # a shard of ours (damaged: run again)
    assert cli.main(["infer", str(image), "--out", str(out), "--mpp", "0.5", *ARGS]) == 0
    assert not (out / ".s.lock").exists() and not (out / ".s.partial").exists()


@pytest.mark.parametrize(
    "content, ours",
    [(b"", True), (b"123\n", True), (b"123", True), (b"\0\0\0\0", True), (b"12\0\0", True), (b"mine", False)],
    ids=["empty", "pid", "pid-no-newline", "zeros", "pid-then-zeros", "user-text"],
)
def test_what_a_killed_run_leaves_at_the_lock_is_taken_over(tmp_path, content, ours):
    """A killed run (or a power cut after it) leaves the lock empty, with its pid, or with zeros: taken over; a file
    with anything else is the user's."""
    from muse_fast.errors import OutputError
    from muse_fast.runtime.lock import SlideLock, lock_path

    lock_path(tmp_path, "s").write_bytes(content)
    if ours:
        with SlideLock(tmp_path, "s"):
            pass
        assert not lock_path(tmp_path, "s").exists()
    else:
        with pytest.raises(OutputError, match="did not write"), SlideLock(tmp_path, "s"):
            pass
        assert lock_path(tmp_path, "s").read_bytes() == content
