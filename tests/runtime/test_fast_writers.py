"""The GeoJSON and CSV writers format each chunk of nuclei directly, by the native library (csrc/format.cpp) where it
is built and else in Python; both paths must write the bytes of the reference path (one json.dumps or csv.writer row
per nucleus), on real BRCA-M2C nucleus positions and on awkward values. The Parquet writer builds its Arrow tables
from buffers (no pandas import); they must equal the reference ``pa.table`` ones."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from muse_fast.kernels import native
from muse_fast.output import native_text
from muse_fast.output.atomic import StagedFiles
from muse_fast.output.writers import CSVWriter, GeoJSONWriter
from muse_fast.runtime.predict import Nuclei

CLASSES = ("lymphocyte", 'tumour "epithelial"', "stromal\u00e9, =spindle")  # quotes, a comma, a formula, non-ASCII


def _real_nuclei(brca_dir, n_images: int = 3) -> list[Nuclei]:
    """Nuclei at BRCA-M2C's labelled positions (plus sub-pixel offsets, as the network gives), with classes and
    scores from a seeded generator; one chunk per image."""
    rng = np.random.default_rng(7)
    chunks = []
    for path in sorted((brca_dir / "labels").glob("*.txt"))[:n_images]:
        yxc = np.loadtxt(path, dtype=np.int64, ndmin=2)
        xy = yxc[:, [1, 0]] + rng.uniform(-0.5, 0.5, (len(yxc), 2)) + 1000.25
        score = rng.uniform(0.3, 1.0, len(yxc)).astype(np.float32)
        prob = rng.uniform(0.34, 1.0, len(yxc)).astype(np.float32)
        chunks.append(Nuclei(xy, score, yxc[:, 2] - 1, prob))
    return chunks


def _awkward() -> Nuclei:
    """Halfway cases of rounding (2.675, 1.005), negative zero, integers, large and tiny values."""
    xy = np.array([[2.675, 1.005], [-0.001, 0.0], [12.0, 1e7 + 0.125], [0.015, 123456.785]], np.float64)
    score = np.array([0.30005, 1.0, 0.99995, 0.5], np.float32)
    prob = np.array([0.33335, 0.0001, 1.0, 0.66665], np.float32)
    return Nuclei(xy, score, np.array([0, 1, 2, 1]), prob)


def _many() -> Nuclei:
    """20,000 values over every scale a slide has, many of them halfway cases of the rounding (k/8 and k/16 are exact
    in binary) and whole numbers."""
    rng = np.random.default_rng(11)
    n = 20_000
    scale = 10.0 ** rng.integers(-3, 7, (n, 2))
    xy = rng.uniform(-1, 1, (n, 2)) * scale
    xy[::4] = rng.integers(0, 10**6, (len(xy[::4]), 2)) / 8.0
    xy[1::4] = rng.integers(0, 10**5, (len(xy[1::4]), 2)).astype(np.float64)
    score = rng.uniform(0, 1, n).astype(np.float32)
    score[::3] = rng.integers(0, 2**16, len(score[::3])) / np.float32(2**16)  # ties of the 4th decimal
    prob = rng.uniform(0, 1, n).astype(np.float32)
    prob[::5] = 0.0
    return Nuclei(xy, score, rng.integers(0, len(CLASSES), n), prob)


@pytest.fixture(params=["native", "python"])
def formatting(request, monkeypatch) -> str:
    """Each formatting path of the writers: the native library (skipped where it is not built), and Python."""
    if request.param == "native":
        if reason := native.unavailable_reason("cpu"):
            pytest.skip(f"the native library is not built here: {reason}")
    else:
        monkeypatch.setattr("muse_fast.output.writers.rows", lambda *args: None)
    return request.param


def _write(cls, tmp_path, name, chunks, reference: bool) -> bytes:
    path = tmp_path / name
    with StagedFiles() as staged:
        writer = cls(path, staged.add(path), CLASSES)
        for chunk in chunks:
            (writer.write_reference if reference else writer.write)(chunk)
        writer.close()
        return writer.tmp.read_bytes()  # before StagedFiles removes the uncommitted file


def test_the_geojson_writer_writes_the_reference_bytes(brca_dir, tmp_path, formatting):
    chunks = [Nuclei.empty(), *_real_nuclei(brca_dir), _awkward(), Nuclei.empty(), _many()]
    fast = _write(GeoJSONWriter, tmp_path, "fast.geojson", chunks, reference=False)
    reference = _write(GeoJSONWriter, tmp_path, "reference.geojson", chunks, reference=True)
    assert sum(len(c) for c in chunks) > 500 and fast == reference


def test_the_csv_writer_writes_the_reference_bytes(brca_dir, tmp_path, formatting):
    odd = _awkward()
    odd.score[1], odd.class_prob[2] = np.nan, np.inf
    chunks = [Nuclei.empty(), *_real_nuclei(brca_dir), _awkward(), odd, Nuclei.empty(), _many()]
    fast = _write(CSVWriter, tmp_path, "fast.csv", chunks, reference=False)
    reference = _write(CSVWriter, tmp_path, "reference.csv", chunks, reference=True)
    assert sum(len(c) for c in chunks) > 500 and fast == reference
    assert b'"tumour ""epithelial"""' in fast and b",nan," in fast


def test_the_native_library_formats_what_it_covers_and_declines_the_rest():
    if reason := native.unavailable_reason("cpu"):
        pytest.skip(f"the native library is not built here: {reason}")
    texts = native_text.ClassTexts(['{"name": "a"}', '{"name": "b"}', '{"name": "c"}'])
    many = _many()
    assert native_text.rows("geojson", many, texts).count("\n") == len(many) - 1
    assert native_text.rows("csv", many, texts).count("\r\n") == len(many)
    far = _awkward()
    far.xy[0, 0] = 1e16  # Python writes it as 1e+16
    nan = _awkward()
    nan.class_prob[0] = np.nan
    assert native_text.rows("geojson", far, texts) is None and native_text.rows("csv", nan, texts) is None
    sparse = _awkward()
    sparse.score[0] = 2.0**40  # adjacent doubles 1.2e-4 apart: repr writes fewer than 4 decimals
    assert native_text.rows("geojson", sparse, texts) is None
    assert native_text.rows("csv", many, native_text.ClassTexts(["a\0b", "b", "c"])) is None  # NUL ends a C string
    stray = _awkward()
    stray.class_id[2] = 3  # no such class
    with pytest.raises(RuntimeError, match="muse_format_csv failed: a class id outside the class list"):
        native_text.rows("csv", stray, texts)


def test_geojson_with_a_non_finite_value_takes_the_reference_path(tmp_path):
    odd = _awkward()
    odd.score[1] = np.nan
    fast = _write(GeoJSONWriter, tmp_path, "fast.geojson", [odd], reference=False)
    assert fast == _write(GeoJSONWriter, tmp_path, "reference.geojson", [odd], reference=True)
    assert b'"score": NaN' in fast


def test_the_parquet_writer_builds_the_reference_table(brca_dir, tmp_path):
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from muse_fast.output.writers import ParquetWriter

    chunks = [*_real_nuclei(brca_dir), _awkward()]
    path = tmp_path / "nuclei.parquet"
    with StagedFiles() as staged:
        writer = ParquetWriter(path, staged.add(path), CLASSES)
        for chunk in [Nuclei.empty(), *chunks]:
            writer.write(chunk)
        writer.close()
        written = pq.read_table(writer.tmp)
        for chunk in chunks:
            assert writer.table(chunk).equals(writer.table_reference(chunk))
        reference = [writer.table_reference(c) for c in chunks]
    assert written.num_rows == sum(len(c) for c in chunks) > 500
    assert written.to_pylist() == [row for table in reference for row in table.to_pylist()]


@pytest.mark.parametrize("group", [7, 100, 65_536])
def test_parquet_row_groups_are_full_but_for_the_last(brca_dir, tmp_path, monkeypatch, group):
    """Chunks are held until a row group is full (a group of a few hundred rows per batch cost a write per batch);
    the rows and their order are those of the chunks, features are never kept."""
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from muse_fast.output import writers

    monkeypatch.setattr(writers, "ROW_GROUP_ROWS", group)
    chunks = [*_real_nuclei(brca_dir, 4), _awkward()]
    chunks[1].feat = np.ones((len(chunks[1]), 8), np.float32)
    path = tmp_path / "nuclei.parquet"
    with StagedFiles() as staged:
        writer = writers.ParquetWriter(path, staged.add(path), CLASSES)
        for chunk in chunks:
            writer.write(chunk)
            assert writer.pending_rows < group and all(p.feat is None for p in writer.pending)
        writer.close()
        meta = pq.ParquetFile(writer.tmp).metadata
        sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        written = pq.read_table(writer.tmp).to_pylist()
        reference = [row for c in chunks for row in writer.table_reference(c).to_pylist()]
    assert sum(sizes) == len(reference) > 500 and written == reference
    assert sizes[:-1] == [group] * (len(sizes) - 1) and 0 < sizes[-1] <= group


def test_writing_parquet_does_not_import_pandas(tmp_path):
    """pyarrow imports pandas the first time numpy data goes through ``pa.array`` or ``pa.table`` (a fresh process
    paid 0.25-0.5 s for it); the writer builds its columns from buffers instead."""
    pytest.importorskip("pyarrow")
    script = (
        "import sys\nfrom pathlib import Path\nimport numpy as np\n"
        "from muse_fast.output.atomic import StagedFiles\nfrom muse_fast.output.writers import ParquetWriter\n"
        "from muse_fast.runtime.predict import Nuclei\n"
        f"path = Path({str(tmp_path / 'n.parquet')!r})\n"
        "with StagedFiles() as staged:\n"
        "    w = ParquetWriter(path, staged.add(path), ('a', 'b'))\n"
        "    w.write(Nuclei(np.ones((3, 2)), np.ones(3, np.float32), np.array([0, 1, 0]), np.ones(3, np.float32)))\n"
        "    w.close()\n"
        "print('pandas' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"


def test_the_native_text_ignores_the_process_locale(tmp_path):
    """A process that set a decimal-comma locale (an embedding application, a notebook) gets the same bytes as
    Python writes: the native path never uses the locale's decimal point."""
    import shutil

    if native.unavailable_reason("cpu"):
        pytest.skip("the native library is not built here")
    if shutil.which("localedef") is None:
        pytest.skip("localedef is not installed: no decimal-comma locale to test with")
    target = tmp_path / "de_DE.UTF-8"
    made = subprocess.run(["localedef", "-i", "de_DE", "-f", "UTF-8", str(target)], capture_output=True)
    if not target.exists():
        pytest.skip(f"localedef could not build de_DE.UTF-8 ({made.stderr.decode(errors='replace').strip()[:200]})")
    script = """
import locale, numpy as np
from muse_fast.output import native_text
from muse_fast.output.writers import CSVWriter, GeoJSONWriter
from muse_fast.runtime.predict import Nuclei
locale.setlocale(locale.LC_ALL, "de_DE.UTF-8")
assert locale.localeconv()["decimal_point"] == ","
n = Nuclei(np.array([[2.675, 1.25], [0.125, 3.0]]), np.array([0.30005, 0.5], np.float32), np.array([0, 0]),
           np.array([0.5, 0.125], np.float32))
texts = native_text.ClassTexts(["a"])
csv = native_text.rows("csv", n, texts)
geo = native_text.rows("geojson", n, texts)
assert csv == CSVWriter.python_rows(type("W", (), {"class_cells": ["a"]})(), n), csv
assert geo == ",\\n".join(GeoJSONWriter.python_rows(type("W", (), {"classification_json": ["a"]})(), n)), geo
print("same")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env={**os.environ, "LOCPATH": str(tmp_path)}
    )
    assert done.returncode == 0 and done.stdout.strip() == "same", done.stderr[-2000:]
