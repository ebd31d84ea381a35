"""QuPath round trip on BRCA-M2C tiles: annotations in, adapted weights out, ``infer`` writes the user's classes."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from conftest import NAMES, annotate
from qupath import QUPATH_COLOURS, line

import muse_fast.cli as cli
from muse_fast.adapt.classes import ClassesConfig
from muse_fast.adapt.full import FullConfig
from muse_fast.adapt.run import AdaptConfig, adapt
from muse_fast.model.weights import file_sha256, load_weights
from muse_fast.train.data.brca import load_split
from muse_fast.train.metrics import hungarian_match

pytestmark = pytest.mark.slow  # the network runs on BRCA-M2C tiles: 5 to 50 s per test on 2 cores

BRCA_TO_USER = np.array([NAMES.index("Immune cells"), NAMES.index("Tumor"), NAMES.index("Stroma")])


@pytest.fixture(scope="module")
def adapted(tmp_path_factory, brca_tiles):
    """``muse-fast adapt --mode classes`` from a sparse quarter of the dots of four train tiles (one exported by
    QuPath 0.2)."""
    root = tmp_path_factory.mktemp("adapt")
    images = annotate(root / "ann", brca_tiles[:3], every=4)
    images += annotate(root / "ann", brca_tiles[3:], every=4, legacy=True)
    out = root / "adapted.pt"
    args = ["adapt", *map(str, images), "--annotations", str(root / "ann"), "--out", str(out), "--mpp", "0.5"]
    assert cli.main([*args, "--mode", "classes", "--quiet"]) == 0
    return root, out


def test_weights_carry_the_users_classes_colours_and_provenance(adapted, capsys):
    root, out = adapted
    _, meta = load_weights(out)
    assert list(meta.classes) == sorted(NAMES)
    assert [list(c) for c in meta.colours] == [QUPATH_COLOURS[n] for n in sorted(NAMES)]
    prov = meta.config["adapt"]
    assert prov["base_sha256"] == file_sha256(load_weights.__globals__["DEFAULT_WEIGHTS"])
    assert prov["annotations"] == {p.name: file_sha256(p) for p in sorted((root / "ann").iterdir())}
    assert prov["mode"] == "classes" and prov["recipe"]["classes"]["folds"] == 5
    report = json.loads((root / "adapted.report.json").read_text())
    assert set(report["classes"]["scores"]["per_class"]) == set(NAMES)
    assert prov["metrics"]["classes"]["scores"] == report["classes"]["scores"]
    assert cli.main(["info", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in info["classes"]] == sorted(NAMES) and info["provenance"]["mode"] == "classes"


def test_infer_writes_the_users_classes_and_agrees_with_held_out_labels(adapted, brca_dir, tmp_path):
    root, out = adapted
    test = load_split("test", brca_dir)[:2]
    folder = tmp_path / "infer"
    paths = [str(brca_dir / "images" / f"{im.name}.png") for im in test]
    assert cli.main(["infer", *paths, "--weights", str(out), "--out", str(folder), "--mpp", "0.5", "--quiet"]) == 0
    agree, total, seen = 0, 0, np.zeros(3, int)
    user = sorted(NAMES)
    for im in test:
        collection = json.loads((folder / f"{im.name}.geojson").read_text())
        assert collection["type"] == "FeatureCollection"
        for f in collection["features"]:
            c = f["properties"]["classification"]
            assert c["color"] == QUPATH_COLOURS[c["name"]]
        with open(folder / f"{im.name}.csv") as fh:
            rows = list(csv.DictReader(fh))
        xy = np.array([[float(r["x"]), float(r["y"])] for r in rows])
        pred = np.array([user.index(r["class_name"]) for r in rows])
        truth = np.array([user.index(NAMES[i]) for i in BRCA_TO_USER[im.labels]])
        pairs = np.array(hungarian_match(im.xy.astype(float), xy, 6.0))
        agree += int((pred[pairs[:, 1]] == truth[pairs[:, 0]]).sum())
        total += len(pairs)
        seen += np.bincount(pred, minlength=3)
    assert total > 200 and agree / total > 0.6, (agree, total)  # 3 classes: chance is 1/3
    assert (seen > 0).sum() >= 2


def test_input_annotations_open_as_feature_collections(adapted):
    root, _ = adapted
    kinds = [json.loads(p.read_text()) for p in sorted((root / "ann").iterdir())]
    assert sum(isinstance(k, dict) and k["type"] == "FeatureCollection" for k in kinds) == 3
    assert sum(isinstance(k, list) for k in kinds) == 1  # QuPath 0.2's bare list of features


def test_full_mode_on_complete_regions(tmp_path, brca_tiles):
    images = annotate(tmp_path / "ann", brca_tiles[:3], regions=True)
    first = tmp_path / "ann" / f"{images[0].stem}.geojson"
    collection = json.loads(first.read_text())
    collection["features"].append(line(0, 0, 50, 50))  # a line drawn by mistake: skipped and counted
    first.write_text(json.dumps(collection))
    full = FullConfig(head_steps=2, network_steps=2, batch_size=2, eval_every=2, thresholds=(0.3, 0.4))
    cfg = AdaptConfig(
        tuple(images),
        tmp_path / "ann",
        tmp_path / "a.pt",
        0.5,
        "auto",
        quiet=True,
        classes=ClassesConfig(steps=50),
        full=full,
    )
    report = adapt(cfg)
    assert report["mode"] == "full" and report["full"]["held_out_regions"] == 1 and report["ignored"] == {"line": 1}
    assert set(report["full"]["held_out"]) == {"base", "head", "network"}
    assert 0.3 <= report["full"]["threshold"] <= full.max_threshold  # the grid grows upward while its top is best
    _, meta = load_weights(tmp_path / "a.pt")
    assert meta.config["adapt"]["mode"] == "full" and "threshold" in meta.config["adapt"]["metrics"]["full"]


def test_failure_while_writing_leaves_nothing(tmp_path, brca_tiles, monkeypatch):
    import muse_fast.adapt.run as run

    def broken(fh, *args, **kwargs):
        fh.write(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(run, "write_weights", broken)
    images = annotate(tmp_path / "ann", brca_tiles[:2], every=3)
    cfg = AdaptConfig(
        tuple(images), tmp_path / "ann", tmp_path / "a.pt", 0.5, "classes", quiet=True, classes=ClassesConfig(steps=5)
    )
    with pytest.raises(OSError):
        adapt(cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ann"]
