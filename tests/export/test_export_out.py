"""``muse-fast export --out``: a path that is not a new or regular file in a writable folder is refused in one line,
before the export runs, and nothing standing there (a FIFO, a symlink, a device node) is written or replaced."""

import os
import stat
from pathlib import Path

import pytest

import muse_fast.export.onnx as onnx_export
from muse_fast.cli import main


@pytest.fixture(autouse=True)
def no_export(monkeypatch):
    """The refusals must come before the export: one that ran fails the test."""

    def ran(*args, **kwargs):
        raise AssertionError("the export ran")

    monkeypatch.setattr(onnx_export, "export_onnx", ran)


def _refused(capsys, out: str, *flags: str) -> str:
    assert main(["export", "--out", out, *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("muse-fast: error: --out") and len(err.splitlines()) == 1, err
    return err


def test_a_fifo_is_refused_and_left_alone(tmp_path, capsys):
    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)
    assert "is a FIFO (named pipe), not a regular file" in _refused(capsys, str(fifo))
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_a_symlink_is_refused_and_its_target_untouched(tmp_path, capsys):
    victim = tmp_path / "notes.txt"
    victim.write_text("the user's")
    link = tmp_path / "model.onnx"
    link.symlink_to(victim)
    assert "is a symbolic link, not a regular file" in _refused(capsys, str(link))
    assert link.is_symlink() and victim.read_text() == "the user's"
    engine_link = tmp_path / "model.engine"  # --format trt also writes model.onnx beside it
    assert "its .onnx beside it" in _refused(capsys, str(engine_link), "--format", "trt")


def test_a_device_node_is_refused_without_writing_it(capsys):
    """As root, ``--out /dev/full`` turned the device node into a 61 MB regular file."""
    assert "/dev/null is a device node" in _refused(capsys, "/dev/null")
    assert stat.S_ISCHR(os.lstat("/dev/null").st_mode)


@pytest.mark.parametrize(
    "out, says",
    [
        ("", "names no file; pass a file path such as model.onnx"),
        ("{tmp}", "is a folder, not a regular file"),
        ("{tmp}/afile/x.onnx", "afile, which is a file, not a folder"),
        ("/proc/x.onnx", "cannot be written: /proc refuses new files"),
    ],
)
def test_paths_that_cannot_hold_the_file_are_refused_first(tmp_path, capsys, out, says):
    if out.startswith("/proc") and not Path("/proc/self").exists():
        pytest.skip("needs /proc (Linux)")
    (tmp_path / "afile").write_text("x")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert says in _refused(capsys, out.format(tmp=tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # the probe file is gone too


def test_a_read_only_folder_is_refused_first(tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    tmp_path.chmod(0o555)
    try:
        assert "refuses new files (Permission denied)" in _refused(capsys, str(tmp_path / "m.onnx"))
    finally:
        tmp_path.chmod(0o755)


def test_an_existing_file_is_the_users_until_overwrite(tmp_path, capsys, monkeypatch):
    mine = tmp_path / "model.onnx"
    mine.write_text("the user's")
    assert "already exists; pass --overwrite" in _refused(capsys, str(mine))
    assert mine.read_text() == "the user's"
    wrote = []
    monkeypatch.setattr(
        onnx_export, "export_onnx", lambda weights, out: wrote.append(out) or (_ for _ in ()).throw(KeyboardInterrupt)
    )
    # with --overwrite the check passes and the export starts (here it is interrupted at once: exit 130)
    assert main(["export", "--out", str(mine), "--overwrite"]) == 130
    assert wrote == [mine] and mine.read_text() == "the user's"


def test_the_weights_read_are_never_the_out_even_with_overwrite(tmp_path, capsys):
    """``export --weights w.pt --out w.pt --overwrite`` replaced the trained weights with the ONNX file."""
    from muse_fast.model.weights import DEFAULT_WEIGHTS

    weights = tmp_path / "w.pt"
    weights.write_bytes(DEFAULT_WEIGHTS.read_bytes())
    os.link(weights, tmp_path / "same.pt")
    for out in (weights, tmp_path / "same.pt", tmp_path / "sub" / ".." / "w.pt"):
        err = _refused(capsys, str(out), "--weights", str(weights), "--overwrite")
        assert "is the weights file the export reads" in err
    err = _refused(capsys, str(DEFAULT_WEIGHTS), "--overwrite")  # the shipped default, read when --weights is left out
    assert "is the weights file the export reads" in err
    assert weights.read_bytes() == DEFAULT_WEIGHTS.read_bytes()


def test_a_tensorrt_engine_named_onnx_and_a_bad_batch_profile_are_refused_first(tmp_path, capsys):
    for flags, says in [
        (["--out", str(tmp_path / "m.onnx"), "--format", "trt"], "name it *.engine"),
        (["--out", str(tmp_path / "m.engine"), "--format", "trt", "--opt-batch", "0"], "need 1 <= opt <= max"),
        (["--out", str(tmp_path / "m.engine"), "--format", "trt", "--opt-batch", "32", "--max-batch", "8"], "<= max"),
    ]:
        assert main(["export", *flags]) == 2
        err = capsys.readouterr().err.strip()
        assert says in err and len(err.splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []
