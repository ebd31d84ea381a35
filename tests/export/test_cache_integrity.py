"""Cached artefacts (ONNX models, int8 models, TensorRT engines) carry a checksum: one that fails it, or anything but
a regular file at its path, is rebuilt with one warning naming it, and never read from or blocked on."""

import os
import threading

import pytest

from muse_fast.export.cache import cached_build, cached_file, checksum_path, read_regular


class Builder:
    """Writes ``content`` to the path it is given, and counts how often it ran."""

    def __init__(self, content: bytes = b"model bytes " * 1000) -> None:
        self.content, self.calls = content, 0

    def __call__(self, path) -> None:
        self.calls += 1
        path.write_bytes(self.content)


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


def test_a_cached_file_is_built_once_with_its_checksum(tmp_path, caplog):
    build, path = Builder(), tmp_path / "onnx" / "m.onnx"
    assert cached_file(path, build, "ONNX model") == path and build.calls == 1
    assert checksum_path(path).read_text().strip() and cached_file(path, build, "ONNX model") == path
    assert build.calls == 1 and not _warnings(caplog)


@pytest.mark.parametrize(
    "damage, why",
    [
        (lambda p: p.write_bytes(p.read_bytes()[:100] + b"\xff" + p.read_bytes()[101:]), "it fails its checksum"),
        (lambda p: p.write_bytes(p.read_bytes()[:-10]), "it fails its checksum"),
        (lambda p: checksum_path(p).unlink(), "it has no checksum"),  # written by an earlier version
        (lambda p: (p.unlink(), os.mkfifo(p)), "missing or not a regular file"),
        (lambda p: (p.unlink(), p.symlink_to("/dev/zero")), "missing or not a regular file"),
    ],
)
def test_a_damaged_or_replaced_cache_entry_is_rebuilt_with_one_line(tmp_path, caplog, damage, why):
    """Flipped bytes in the cached ONNX file gave '0 nuclei', recorded as done."""
    build, path = Builder(), tmp_path / "m.onnx"
    cached_file(path, build, "ONNX model")
    damage(path)
    caplog.clear()
    done = threading.Event()  # a FIFO must not block the check: fail instead of hanging
    thread = threading.Thread(target=lambda: (cached_file(path, build, "ONNX model"), done.set()), daemon=True)
    thread.start()
    thread.join(30)
    assert done.is_set(), "the cache check blocked"
    assert build.calls == 2 and path.read_bytes() == build.content and not path.is_symlink()
    assert _warnings(caplog)[-1] == f"cached ONNX model {path}: {why}; rebuilding it"


def test_a_tensorrt_engine_that_fails_its_checksum_is_rebuilt(tmp_path, caplog):
    path, calls = tmp_path / "engines" / "e.engine", []

    def build() -> bytes:
        calls.append(1)
        return b"engine" * 100

    assert cached_build(path, build) == b"engine" * 100 and cached_build(path, build) == b"engine" * 100
    assert len(calls) == 1
    path.write_bytes(b"Engine" + path.read_bytes()[6:])
    assert cached_build(path, build) == b"engine" * 100 and len(calls) == 2
    assert "fails its checksum; rebuilding it" in _warnings(caplog)[-1]


def test_reads_refuse_special_files_without_blocking(tmp_path, caplog):
    fifo, link, folder = tmp_path / "fifo", tmp_path / "zero", tmp_path / "dir"
    os.mkfifo(fifo)
    link.symlink_to("/dev/zero")
    folder.mkdir()
    assert read_regular(fifo) is None and read_regular(link) is None and read_regular(folder) is None
    assert read_regular(tmp_path / "missing") is None
    kinds = [w.split(" in the cache is ")[1] for w in _warnings(caplog)]
    assert kinds == [
        "a FIFO (named pipe), not a file of ours; ignoring it",
        "a symbolic link, not a file of ours; ignoring it",
        "a folder, not a file of ours; ignoring it",
    ]
