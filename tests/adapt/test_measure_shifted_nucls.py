"""``benchmarks/adapt_measure.py shifted-nucls``: NuCLS at the model's 0.5 um/px under a perturbation, its train
crops as complete regions (every point kept, in QuPath's export form) and its test crops scored by class name."""

import json

import numpy as np
from test_measure_sweep import load_script

from muse_fast.adapt.annotations import read_annotations


def _points(geojson):
    data = json.loads(geojson.read_text())
    return sum(len(f["geometry"]["coordinates"]) for f in data["features"] if f["geometry"]["type"] == "MultiPoint")


def test_complete_regions_at_half_scale_and_test_labels_by_name(nucls_dir, tmp_path):
    measure = load_script()
    out = tmp_path / "shifted"
    measure.shifted_nucls(out, "hed=0.2")  # colour only: every label stays, in the halved crop
    train = measure.nucls("train")
    assert sorted(p.name for p in (out / "train").iterdir()) == sorted(f"{img.stem}.png" for img, _, _ in train)
    for img, xy, _ in train:
        region = out / "regions" / f"{img.stem}.geojson"
        assert _points(region) == len(xy)  # complete: every annotated nucleus of the crop
        annotations = read_annotations(region)
        assert len(annotations.regions) == 1 and set(annotations.names) <= set(measure.NUCLS_IDS.values())
        size = np.array(measure.Image.open(img).size) // 2
        assert tuple(measure.Image.open(out / "train" / f"{img.stem}.png").size) == tuple(size)
    names = ["tumor_any", "nonTIL_stromal", "sTIL", "other_nucleus"]
    images, scale = measure.test_set(f"shifted:{out}", names)
    reference, _ = measure.test_set("nucls", names)  # the unshifted crops, halved the same way
    assert scale == 1.0 and len(images) == len(reference) == 5
    for (image, xy, ids), (ref_image, ref_xy, ref_ids) in zip(images, reference):
        assert image.shape == ref_image.shape and not np.array_equal(image, ref_image)  # re-stained
        np.testing.assert_allclose(xy, ref_xy, atol=1e-4)
        np.testing.assert_array_equal(ids, ref_ids)
    measure.shifted_nucls(tmp_path / "stretched", "stretch=1.3,shear=0.2")  # geometry moves pixels and labels
    stretched, _ = measure.test_set(f"shifted:{tmp_path / 'stretched'}", names)
    assert stretched[0][0].shape[1] > images[0][0].shape[1]
