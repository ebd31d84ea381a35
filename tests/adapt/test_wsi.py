"""Adapt on a real whole-slide image from a QuPath export in level-0 pixels, then ``infer --weights`` on the slide."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from qupath import QUPATH_COLOURS, point_set, write_qupath

import muse_fast.cli as cli
from muse_fast.io.readers import open_slide
from muse_fast.io.resample import read_at_scale
from muse_fast.model.weights import load_weights
from muse_fast.post.decode import DecodeConfig
from muse_fast.runtime.engines import TorchEngine
from muse_fast.runtime.predict import predict_image
from muse_fast.train.metrics import hungarian_match

pytestmark = pytest.mark.slow  # the network runs on the slide twice (adapt, infer): about 40 s on 2 cores

AREA = (600, 900, 600)  # level-0 x, y and side of the annotated area of CMU-1-Small-Region.svs
USER = {0: "Immune cells", 2: "Stroma"}  # the shipped classes (lymphocyte, stromal) the annotator marks, as QuPath


def shipped_nuclei(svs):
    """Clear nuclei the shipped detector finds in :data:`AREA` (centre score > 0.5, away from its edges): level-0
    positions, class ids and class probabilities."""
    model, meta = load_weights(None)
    slide = open_slide(svs)
    try:
        scale = meta.mpp / slide.mpp  # level-0 pixels per model pixel (0.5 / 0.499)
        x0, y0, side = AREA
        image = read_at_scale(slide, x0, y0, side, scale)
    finally:
        slide.close()
    nuc = predict_image(TorchEngine(model, "cpu", "fp32"), image, meta.tile_size, 32, DecodeConfig())
    keep = (nuc.score > 0.5) & np.all((nuc.xy > 32) & (nuc.xy < side - 32), axis=1)
    return nuc.xy[keep] * scale + (x0, y0), nuc.class_id[keep], nuc.class_prob[keep]


@pytest.fixture(scope="module")
def annotated(cmu_svs, tmp_path_factory):
    """A QuPath export: a MultiPoint of each class and three single Points, on confident nuclei of each class."""
    xy, cls, prob = shipped_nuclei(cmu_svs)
    folder = tmp_path_factory.mktemp("wsi") / "exports"
    folder.mkdir()
    features, marked = [], []
    for c, name in USER.items():
        idx = np.flatnonzero((cls == c) & (prob > 0.8))[:14]
        assert len(idx) == 14, f"the area has too few confident nuclei of class {c}"
        features.append(point_set(name, xy[idx[:-1]], QUPATH_COLOURS[name]))
        single = point_set(name, xy[idx[-1:]], QUPATH_COLOURS[name])
        single["geometry"] = {"type": "Point", "coordinates": [float(v) for v in xy[idx[-1]]]}
        features.append(single)
        marked += [(xy[i], name) for i in idx]
    write_qupath(folder / f"{cmu_svs.stem}.geojson", features)
    return folder, marked


def test_adapted_weights_infer_the_users_classes_on_the_slide(cmu_svs, annotated, tmp_path):
    folder, marked = annotated
    out = tmp_path / "skin.pt"
    args = ["adapt", str(cmu_svs), "--annotations", str(folder), "--out", str(out), "--mode", "classes", "--quiet"]
    assert cli.main(args) == 0  # no --mpp: the SVS records its resolution
    report = json.loads((tmp_path / "skin.report.json").read_text())
    assert report["classes"]["points"] == len(marked) and report["classes"]["unmatched_points"] == 0
    _, meta = load_weights(out)
    assert list(meta.classes) == sorted(USER.values())

    result = tmp_path / "infer"
    assert cli.main(["infer", str(cmu_svs), "--weights", str(out), "--out", str(result), "--quiet"]) == 0
    collection = json.loads((result / f"{cmu_svs.stem}.geojson").read_text())
    assert collection["type"] == "FeatureCollection" and len(collection["features"]) > 1000
    names = set()
    for feature in collection["features"]:
        c = feature["properties"]["classification"]
        assert c["color"] == QUPATH_COLOURS[c["name"]]
        names.add(c["name"])
    assert names == set(USER.values())
    with open(result / f"{cmu_svs.stem}.csv") as fh:
        rows = list(csv.DictReader(fh))
    found = np.array([[float(r["x"]), float(r["y"])] for r in rows])  # level-0 pixels, as the annotations
    truth = np.array([p for p, _ in marked])
    pairs = np.asarray(hungarian_match(truth, found, 6.0)).reshape(-1, 2)
    assert len(pairs) == len(marked)  # every annotated nucleus is found where QuPath put it
    same = sum(rows[j]["class_name"] == marked[i][1] for i, j in pairs)
    assert same >= 0.85 * len(marked), (same, len(marked))


def test_an_mpp_that_overrides_the_slide_s_own_is_said_once(cmu_svs, tmp_path, caplog):
    """adapt opens each input twice (checks, then windows): the --mpp warning comes once, and the windows are read
    at the --mpp given."""
    import logging

    from muse_fast.adapt.inputs import load_inputs, read_windows

    folder = tmp_path / "ann"
    folder.mkdir()
    (folder / "CMU-1-Small-Region.csv").write_text("x,y,class\n100,100,a\n300,200,b\n")
    with caplog.at_level(logging.WARNING):
        (item,) = load_inputs([cmu_svs], folder, 0.25)
        windows = read_windows(item, ("a", "b"), 0.5, 0.25)
    assert item.mpp == 0.25 and sum("overrides it" in r.getMessage() for r in caplog.records) == 1
    np.testing.assert_allclose(np.concatenate([w.xy + w.origin for w in windows]), [[50, 50], [150, 100]], atol=1)
