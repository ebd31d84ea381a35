"""The GeoJSON writer formats each chunk of nuclei directly; its reference path (one json.dumps per nucleus) must
write the same bytes, on real BRCA-M2C nucleus positions and on awkward values."""

from __future__ import annotations

import numpy as np

from muse_fast.output.atomic import StagedFiles
from muse_fast.output.writers import GeoJSONWriter
from muse_fast.runtime.predict import Nuclei

CLASSES = ("lymphocyte", 'tumour "epithelial"', "stromal\u00e9")  # quotes and a non-ASCII letter to escape


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


def _write(cls, tmp_path, name, chunks, reference: bool) -> bytes:
    path = tmp_path / name
    with StagedFiles() as staged:
        writer = cls(path, staged.add(path), CLASSES)
        for chunk in chunks:
            (writer.write_reference if reference else writer.write)(chunk)
        writer.close()
        return writer.tmp.read_bytes()  # before StagedFiles removes the uncommitted file


def test_the_geojson_writer_writes_the_reference_bytes(brca_dir, tmp_path):
    chunks = [Nuclei.empty(), *_real_nuclei(brca_dir), _awkward(), Nuclei.empty()]
    fast = _write(GeoJSONWriter, tmp_path, "fast.geojson", chunks, reference=False)
    reference = _write(GeoJSONWriter, tmp_path, "reference.geojson", chunks, reference=True)
    assert sum(len(c) for c in chunks) > 500 and fast == reference


def test_geojson_with_a_non_finite_value_takes_the_reference_path(tmp_path):
    odd = _awkward()
    odd.score[1] = np.nan
    fast = _write(GeoJSONWriter, tmp_path, "fast.geojson", [odd], reference=False)
    assert fast == _write(GeoJSONWriter, tmp_path, "reference.geojson", [odd], reference=True)
    assert b'"score": NaN' in fast
