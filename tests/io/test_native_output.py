"""Native libraries' output is captured; Python's own output still reaches the terminal; bad input is one line."""

import os
import subprocess
import sys

import pytest

from muse_fast.io.native_output import active_log, capture_native_output, decode_errors

CAPTURE_SCRIPT = r"""
import ctypes, logging, os, sys
from muse_fast.io.native_output import capture_native_output
logging.basicConfig(level=logging.WARNING, format="log: %(message)s")
with capture_native_output() as log:
    os.write(2, b"Corrupt JPEG data: premature end of data segment\n")
    ctypes.CDLL(None).printf(b"ERROR in line 205 while decompressing JPEG image:\n")  # C stdio, buffered
    print("python stderr", file=sys.stderr)
    print("python stdout")
    logging.warning("python logging")
    captured = log.since(0).splitlines()
print("captured:", captured)
"""


def test_native_writes_are_captured_and_python_output_is_not():
    done = subprocess.run([sys.executable, "-c", CAPTURE_SCRIPT], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Corrupt JPEG" not in done.stderr and "ERROR in line" not in done.stdout.split("captured:")[0]
    assert "python stderr" in done.stderr and "log: python logging" in done.stderr
    assert "python stdout" in done.stdout
    captured = done.stdout.split("captured:")[1]
    assert "Corrupt JPEG data" in captured and "ERROR in line 205" in captured


def test_capture_is_reentrant_and_restores_the_descriptors():
    before = os.fstat(2).st_ino, os.fstat(1).st_ino
    with capture_native_output() as outer:
        with capture_native_output() as inner:
            assert inner is outer is active_log()
            mark = outer.offset()
            os.write(2, b"Bogus marker length\n")
            assert decode_errors(outer.since(mark)) == ["Bogus marker length"]
    assert active_log() is None
    assert (os.fstat(2).st_ino, os.fstat(1).st_ino) == before


def test_decode_error_lines_are_recognised():
    text = "TIFFReadDirectory: Warning, Unknown field with tag 65420\nUnsupported marker type 0x3f\nall fine\n"
    assert decode_errors(text) == ["Unsupported marker type 0x3f"]


def _cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "muse_fast", *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )


@pytest.mark.parametrize("case", ["truncated", "garbage"])
def test_bad_slides_print_at_most_three_lines(cmu_svs, tmp_path, case):
    path = tmp_path / f"{case}.svs"
    data = cmu_svs.read_bytes()
    path.write_bytes(data[: len(data) * 6 // 10] if case == "truncated" else data[:4096] + os.urandom(200_000))
    done = _cli("infer", str(path), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 2
    lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
    assert 1 <= len(lines) <= 3, lines
    assert any("error:" in line for line in lines)
    assert not (tmp_path / "out").exists() or not any(p.suffix == ".geojson" for p in (tmp_path / "out").iterdir())
