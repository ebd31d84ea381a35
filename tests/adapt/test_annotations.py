"""QuPath GeoJSON and CSV annotations: what is read, what is skipped with a count, what is refused in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from qupath import line, point_set, rectangle, write_qupath

from muse_fast.adapt.annotations import class_table, inside, read_annotations
from muse_fast.errors import InputError


def test_feature_collection_points_regions_and_skipped_kinds(tmp_path):
    features = [
        point_set("Tumor", np.array([[10.5, 20.0], [30.0, 40.0]]), [200, 0, 0]),
        point_set("Stroma", np.array([[50.0, 60.0]]), [150, 200, 150]),
        rectangle(0, 0, 100, 100),
        line(0, 0, 10, 10),
        {**rectangle(5, 5, 20, 20), "properties": {"objectType": "annotation", "classification": {"name": "Tumor"}}},
    ]
    ann = read_annotations(write_qupath(tmp_path / "a.geojson", features))
    assert ann.names == ["Tumor", "Tumor", "Stroma"]
    np.testing.assert_allclose(ann.xy, [[10.5, 20.0], [30.0, 40.0], [50.0, 60.0]])
    assert len(ann.regions) == 1 and ann.regions[0].shape == (5, 2)
    assert ann.colours == {"Tumor": (200, 0, 0), "Stroma": (150, 200, 150)}
    assert ann.ignored == {"line": 1, "classified polygon": 1}


def test_cells_and_detections_exported_with_all_objects_are_not_regions(tmp_path):
    """*Export objects as GeoJSON* with all objects writes QuPath's cells and detections beside the annotations:
    unclassified cell polygons must not become complete regions ("no nuclei here"), nor classified ones classes."""
    cell = {**rectangle(1, 1, 9, 9), "properties": {"objectType": "cell", "isLocked": False}}
    detection = {**rectangle(2, 2, 8, 8), "properties": {"objectType": "detection", "classification": {"name": "T"}}}
    point_detection = {**point_set("T", np.array([[5.0, 5.0]]), [1, 2, 3])}
    point_detection["properties"] = {**point_detection["properties"], "objectType": "detection"}
    features = [point_set("Tumor", np.array([[10.0, 20.0]]), [200, 0, 0]), rectangle(0, 0, 50, 50)]
    ann = read_annotations(write_qupath(tmp_path / "a.geojson", [*features, cell, cell, detection, point_detection]))
    assert len(ann.regions) == 1 and ann.names == ["Tumor"]
    assert ann.ignored == {"cell object": 2, "detection object": 2}
    legacy_cell = {**rectangle(1, 1, 9, 9), "id": "PathCellObject"}  # QuPath 0.2: the object's class as its id
    legacy_cell["properties"] = {"isLocked": False, "measurements": []}
    legacy = [point_set("Tumor", np.array([[10.0, 20.0]]), [200, 0, 0], legacy=True), legacy_cell]
    ann = read_annotations(write_qupath(tmp_path / "b.geojson", legacy, legacy=True))
    assert ann.regions == [] and ann.ignored == {"cell object": 1}


def test_legacy_bare_list_with_signed_colour(tmp_path):
    features = [point_set("Immune cells", np.array([[1.0, 2.0]]), [160, 90, 160], legacy=True)]
    ann = read_annotations(write_qupath(tmp_path / "a.geojson", features, legacy=True))
    assert ann.names == ["Immune cells"] and ann.colours == {"Immune cells": (160, 90, 160)}


def test_single_points_and_csv(tmp_path):
    point = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [3, 4]}, "properties": {}}
    point["properties"]["classification"] = {"name": "Other", "color": [1, 2, 3]}
    assert read_annotations(write_qupath(tmp_path / "p.geojson", [point])).names == ["Other"]
    (tmp_path / "c.csv").write_text("x,y,class\n1,2,Tumor\n3.5,4,Stroma\n")
    ann = read_annotations(tmp_path / "c.csv")
    assert ann.names == ["Tumor", "Stroma"] and ann.xy.tolist() == [[1, 2], [3.5, 4]]


@pytest.mark.parametrize(
    "content, expected",
    [
        (
            {
                "type": "FeatureCollection",
                "features": [{"type": "Feature", "geometry": {"type": "GeometryCollection"}}],
            },
            "'GeometryCollection'",
        ),
        (
            [
                {
                    "type": "Feature",
                    "geometry": {"type": "MultiPoint", "coordinates": [[1, 2], [3, 4]]},
                    "properties": {},
                }
            ],
            "2 points without a class",
        ),
        ({"type": "FeatureCollection"}, "no GeoJSON features"),
        *(
            (
                {
                    "type": "FeatureCollection",
                    "features": [
                        {
                            "type": "Feature",
                            "geometry": {"type": "Point", "coordinates": bad},
                            "properties": {"classification": {"name": "Tumor"}},
                        }
                    ],
                },
                "malformed coordinate",
            )
            for bad in (["12", "34"], [True, False], [5], "12,34", [None, 3])
        ),
    ],
)
def test_refused_in_one_line(tmp_path, content, expected):
    path = tmp_path / "a.geojson"
    path.write_text(json.dumps(content))
    with pytest.raises(InputError, match=expected) as err:
        read_annotations(path)
    assert "\n" not in str(err.value)


def test_mixed_case_class_names_are_refused(tmp_path):
    a = read_annotations(write_qupath(tmp_path / "a.geojson", [point_set("Tumor", np.ones((1, 2)), [1, 1, 1])]))
    b = read_annotations(write_qupath(tmp_path / "b.geojson", [point_set("tumor", np.ones((1, 2)), [1, 1, 1])]))
    with pytest.raises(InputError, match="'Tumor' and 'tumor' differ only in case"):
        class_table([a, b])


def test_class_table_sorted_with_given_and_default_colours(tmp_path):
    a = read_annotations(write_qupath(tmp_path / "a.geojson", [point_set("b", np.ones((1, 2)), [9, 8, 7])]))
    (tmp_path / "c.csv").write_text("1,2,a\n")
    names, colours = class_table([a, read_annotations(tmp_path / "c.csv")])
    assert names == ("a", "b") and colours[1] == (9, 8, 7) and len(colours[0]) == 3


def test_inside_square_and_triangle():
    square = np.array([[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]], float)
    xy = np.array([[5, 5], [11, 5], [-1, -1], [9.9, 0.1]])
    assert inside(xy, square).tolist() == [True, False, False, True]
    triangle = np.array([[0, 0], [10, 0], [0, 10]], float)
    assert inside(np.array([[2, 2], [8, 8]]), triangle).tolist() == [True, False]


def _points(classification, coords=((1.0, 2.0), (3.0, 4.0))) -> dict:
    return {
        "type": "Feature",
        "geometry": {"type": "MultiPoint", "coordinates": [list(c) for c in coords]},
        "properties": {"objectType": "annotation", "classification": classification},
    }


def test_derived_classes_keep_their_parent(tmp_path):
    """A derived class is named as QuPath shows it ("Tumor: Positive"), whether the file writes it whole, in parts
    (``names``) or, as before QuPath 0.4, as a name under a ``parentClass``: never merged with another parent's."""
    features = [
        _points({"name": "Tumor: Positive", "color": [200, 0, 0]}),
        _points({"names": ["Stroma", "Positive"], "color": [0, 200, 0]}),
        _points({"name": "Negative", "parentClass": {"name": "Tumor"}, "colorRGB": -16776961}),
        _points({"name": "Stroma: Negative", "parentClass": {"name": "Stroma"}}),
    ]
    ann = read_annotations(write_qupath(tmp_path / "a.geojson", features))
    assert list(dict.fromkeys(ann.names)) == [
        "Tumor: Positive",
        "Stroma: Positive",
        "Tumor: Negative",
        "Stroma: Negative",
    ]
    assert ann.colours["Stroma: Positive"] == (0, 200, 0) and ann.colours["Tumor: Negative"] == (0, 0, 255)


def test_one_name_typed_two_ways_is_one_class(tmp_path):
    nfc, nfd = "Tum\u00f6r", "Tumo\u0308r"  # the same letters: precomposed, and o + combining diaeresis
    a = read_annotations(write_qupath(tmp_path / "a.geojson", [_points({"name": nfc})]))
    (tmp_path / "b.csv").write_text(f"x,y,class\n1,2,{nfd}\n", encoding="utf-8")
    names, _ = class_table([a, read_annotations(tmp_path / "b.csv")])
    assert names == (nfc,)


def test_a_colour_that_is_not_numbers_is_left_to_the_default(tmp_path):
    ann = read_annotations(write_qupath(tmp_path / "a.geojson", [_points({"name": "T", "color": ["red", None, 3]})]))
    assert ann.names == ["T", "T"] and ann.colours == {}


def test_csv_header_in_any_order(tmp_path):
    (tmp_path / "c.csv").write_text("Class,Y,X\nTumor,2,1\n")
    ann = read_annotations(tmp_path / "c.csv")
    assert ann.names == ["Tumor"] and ann.xy.tolist() == [[1, 2]]


def _polygon(coordinates) -> dict:
    return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": coordinates}, "properties": {}}


@pytest.mark.parametrize(
    "feature, expected",
    [
        (_polygon([[[0, 0], [10, 0], [10, 10], [0, 0]], [[2, 2], [3, 2], [3, 3], [2, 2]]]), "region with a hole"),
        (_polygon([]), "malformed Polygon"),
        (_polygon([[]]), "malformed Polygon"),
        ({**_points({"name": "T"}), "geometry": {"type": "MultiPoint", "coordinates": 5}}, "malformed MultiPoint"),
    ],
)
def test_malformed_and_holed_geometry_is_one_line(tmp_path, feature, expected):
    with pytest.raises(InputError, match=expected):
        read_annotations(write_qupath(tmp_path / "a.geojson", [feature]))


def test_a_csv_in_another_encoding_is_one_line(tmp_path):
    (tmp_path / "c.csv").write_bytes("x,y,class\n1,2,Tum\u00f6r\n".encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8 text"):
        read_annotations(tmp_path / "c.csv")


def test_one_path_given_twice_is_refused_also_through_the_api(tmp_path):
    from muse_fast.adapt.inputs import pair_inputs

    image = tmp_path / "s.png"
    image.write_bytes(b"")
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "s.csv").write_text("x,y,class\n1,2,T\n")
    with pytest.raises(InputError, match="given twice"):
        pair_inputs([image, image], tmp_path / "ann")


def test_classes_given_one_colour_or_none_get_colours_of_their_own(tmp_path):
    """QuPath may export two classes in one colour (user classes), and a CSV gives none: each class gets its own."""
    same = [point_set(n, np.ones((1, 2)), [0, 114, 178]) for n in ("sTIL", "nonTIL_stromal")]
    a = read_annotations(write_qupath(tmp_path / "a.geojson", same))
    (tmp_path / "b.csv").write_text("x,y,class\n1,2,epithelial\n3,4,inflammatory\n5,6,spindle\n7,8,misc\n")
    names, colours = class_table([a, read_annotations(tmp_path / "b.csv")])
    assert len(set(colours)) == len(names) == 6
    assert colours[names.index("nonTIL_stromal")] == (0, 114, 178)  # the first class in that colour keeps it


def test_inputs_pair_with_their_exports_by_qupath_s_name(tmp_path):
    """An OME-TIFF's export is named without ``.ome.tif`` (as QuPath and infer name it), an upper-case suffix is
    found, and a missing file is named in the error."""
    from muse_fast.adapt.inputs import pair_inputs

    slide, image = tmp_path / "OS-1.ome.tif", tmp_path / "b.png"
    slide.write_bytes(b"x")
    image.write_bytes(b"x")
    ann = tmp_path / "ann"
    ann.mkdir()
    (ann / "OS-1.geojson").write_text("{}")
    (ann / "b.GeoJSON").write_text("{}")
    assert pair_inputs([slide, image], ann) == [(slide, ann / "OS-1.geojson"), (image, ann / "b.GeoJSON")]
    (ann / "OS-1.geojson").unlink()
    with pytest.raises(InputError, match=r"no annotations for OS-1\.ome\.tif \(OS-1\.geojson or OS-1\.csv\)"):
        pair_inputs([slide, image], ann)
    (ann / "OS-1.ome.geojson").write_text("{}")  # the name adapt used before: still found
    assert pair_inputs([slide, image], ann)[0] == (slide, ann / "OS-1.ome.geojson")
    for twin in ("OS-1.geojson", "OS-1.csv"):  # two files for one input: which one holds the user's work is unknown
        (ann / twin).write_text("{}")
        with pytest.raises(InputError, match=rf"{twin.replace('.', '[.]')}, OS-1[.]ome[.]geojson in .* keep one"):
            pair_inputs([slide, image], ann)
        (ann / twin).unlink()
    (ann / "b.geojson").write_text("{}")
    with pytest.raises(InputError, match=r"b\.GeoJSON, b\.geojson in .* are annotations of one input"):
        pair_inputs([slide, image], ann)


def test_one_export_never_serves_two_inputs(tmp_path):
    from muse_fast.adapt.inputs import pair_inputs

    slide, image = tmp_path / "A.ome.tif", tmp_path / "A.ome.png"  # stems A and A.ome; A.ome.geojson fits both
    for p in (slide, image):
        p.write_bytes(b"x")
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "A.ome.geojson").write_text("{}")
    with pytest.raises(InputError, match=r"A\.ome\.tif and .*A\.ome\.png would share the annotations A\.ome\.geojson"):
        pair_inputs([slide, image], tmp_path / "ann")


def test_properties_that_are_not_an_object_hold_nothing(tmp_path):
    feature = {**point_set("Tumor", np.array([[1.0, 2.0]]), [200, 0, 0]), "properties": ["not", "an", "object"]}
    with pytest.raises(InputError, match="1 points without a class"):
        read_annotations(write_qupath(tmp_path / "a.geojson", [feature]))
