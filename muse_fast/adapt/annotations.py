"""QuPath annotations -> labelled points and complete regions, in level-0 pixels.

QuPath (File > Export objects as GeoJSON) writes a FeatureCollection; versions before 0.4 wrote a bare list of
features. Each feature is ``{"type": "Feature", "id": ..., "geometry": ..., "properties": {"objectType":
"annotation", "classification": {"name": ..., "color": [r, g, b]}}}`` (older files: ``"colorRGB"``, a signed
ARGB integer). The points tool writes one ``MultiPoint`` per class. Polygons without a classification (rectangles,
brush or polygon tool) mark complete regions: every nucleus inside them is annotated, so a region without points
says "no nuclei here". Lines and classified polygons are not used; they are counted and reported. A ``<stem>.csv``
with ``x,y,class`` rows (header optional) is the other accepted form.
"""

from __future__ import annotations

import csv
import glob
import json
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..post.classes import class_colours

POINT_TYPES = ("Point", "MultiPoint")
REGION_TYPES = ("Polygon", "MultiPolygon")
IGNORED_TYPES = ("LineString", "MultiLineString")  # QuPath's line and polyline tools


@dataclass
class Annotations:
    """One image's annotations: class names per point, level-0 ``xy``, complete regions (exterior rings)."""

    source: Path
    xy: np.ndarray  # float64 [N, 2] (x, y), level-0 pixels
    names: list[str]  # class name of each point
    regions: list[np.ndarray] = field(default_factory=list)  # float64 [M, 2] exterior rings, level-0 pixels
    colours: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # as QuPath gave them
    ignored: dict[str, int] = field(default_factory=dict)  # what was skipped, by kind, with counts


ANNOTATION_SUFFIXES = (".geojson", ".json", ".csv")  # any case (".GeoJSON")


def find_annotation_file(folder: Path, stems: tuple[str, ...]) -> Path | None:
    """The one ``folder/<stem>.geojson``, ``.json`` or ``.csv`` (the suffix in any case) of any of ``stems``; None when
    there is none; two such files (which one to use is not the user's) are an :class:`InputError`."""
    found = sorted(
        p
        for stem in dict.fromkeys(stems)
        for p in folder.glob(f"{glob.escape(stem)}.*")
        if p.stem == stem and p.suffix.lower() in ANNOTATION_SUFFIXES and p.is_file()
    )
    if len(found) > 1:
        raise InputError(
            f"{', '.join(p.name for p in found)} in {folder} are annotations of one input; keep one of them"
        )
    return found[0] if found else None


def read_annotations(path: Path) -> Annotations:
    """Parse a QuPath GeoJSON export or an ``x,y,class`` CSV; malformed files are one-line :class:`InputError`."""
    if path.suffix.lower() == ".csv":
        return _read_csv(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path.name} is not valid JSON ({exc}); export it again from QuPath") from None
    features = data.get("features") if isinstance(data, dict) else data
    if isinstance(data, dict) and data.get("type") == "Feature":
        features = [data]
    if not isinstance(features, list):
        raise InputError(
            f"{path.name} holds no GeoJSON features; export with File > Export objects as GeoJSON (annotations)"
        )
    return _from_features(path, features)


def _from_features(path: Path, features: list) -> Annotations:
    xy: list[list[float]] = []
    names: list[str] = []
    regions: list[np.ndarray] = []
    colours: dict[str, tuple[int, int, int]] = {}
    ignored: dict[str, int] = {}
    unclassified_points = 0
    for feature in features:
        geometry = (feature or {}).get("geometry") if isinstance(feature, dict) else None
        kind = geometry.get("type") if isinstance(geometry, dict) else None
        props = feature.get("properties") if isinstance(feature, dict) else None
        props = props if isinstance(props, dict) else {}  # QuPath writes an object; anything else holds nothing
        other = _not_an_annotation(feature, props)
        if other:  # cells, detections, tiles: QuPath's measurements, not the user's marks
            ignored[f"{other} object"] = ignored.get(f"{other} object", 0) + 1
            continue
        name, colour = _classification(props.get("classification"))
        if kind in POINT_TYPES:
            coords = geometry.get("coordinates")
            points = [coords] if kind == "Point" else coords
            if not isinstance(points, list):
                raise InputError(f"{path.name} has a malformed {kind} ({coords!r}); export it again from QuPath")
            if name is None:
                unclassified_points += len(points or [])
                continue
            for p in points or []:
                xy.append(_xy(path, p))
                names.append(name)
            if colour is not None:
                colours.setdefault(name, colour)
        elif kind in REGION_TYPES:
            if name is not None:
                ignored["classified polygon"] = ignored.get("classified polygon", 0) + 1
                continue
            polygons = [geometry.get("coordinates")] if kind == "Polygon" else geometry.get("coordinates")
            for rings in polygons if isinstance(polygons, list) else [None]:
                regions.append(_region(path, kind, rings))
        elif kind in IGNORED_TYPES:
            ignored["line"] = ignored.get("line", 0) + 1
        else:
            raise InputError(
                f"{path.name} has a geometry of type {kind!r}, which adapt does not use; keep points (Point, "
                f"MultiPoint), regions (Polygon, MultiPolygon) and lines, or remove that object in QuPath"
            )
    if unclassified_points:
        raise InputError(
            f"{path.name} has {unclassified_points} points without a class; give every point set a class in QuPath "
            "(right-click the points > Set classification) and export again"
        )
    return Annotations(path, np.asarray(xy, np.float64).reshape(-1, 2), names, regions, colours, ignored)


def _not_an_annotation(feature, props: dict) -> str | None:
    """The kind of a QuPath object that is not an annotation ("cell", "detection", "tile", ...), else None. QuPath
    0.4 and later write ``properties.objectType``; 0.2 and 0.3 wrote the object's class as the feature's ``id``
    (``PathCellObject``); a feature with neither is taken as an annotation (a file written by hand or another tool)."""
    kind = props.get("objectType")
    if kind is None and isinstance(feature, dict) and isinstance(feature.get("id"), str):
        legacy = feature["id"]
        if legacy.startswith("Path") and legacy.endswith("Object"):
            kind = legacy[4:-6].lower()
    if not isinstance(kind, str) or kind.lower() == "annotation":
        return None
    return kind.lower()


def _region(path: Path, kind: str, rings) -> np.ndarray:
    """A complete region's exterior ring; a region with a hole is refused (the hole would count as annotated)."""
    if not isinstance(rings, list) or not rings or not isinstance(rings[0], list) or len(rings[0]) < 3:
        raise InputError(f"{path.name} has a malformed {kind} ({rings!r}); export it again from QuPath")
    if len(rings) > 1:
        raise InputError(
            f"{path.name} has a complete region with a hole; adapt would take the hole as annotated: draw the region "
            "without it (or as pieces around it) in QuPath and export again"
        )
    return np.asarray([_xy(path, p) for p in rings[0]], np.float64)


def _classification(value) -> tuple[str | None, tuple[int, int, int] | None]:
    """(name, colour) of a QuPath ``classification``: ``name`` (a derived class as QuPath shows it, "Tumor: Positive"),
    or ``names`` (its parts), or an older file's ``name`` under a ``parentClass`` chain; the colour from ``color`` or
    the older signed ``colorRGB``. Names are compared in Unicode NFC (the same letters typed two ways are one class)."""
    if isinstance(value, str):  # some exporters write the name alone
        return _class_name(value), None
    if not isinstance(value, dict):
        return None, None
    parts = value.get("names")
    if str(value.get("name") or "").strip():
        name = str(value["name"])
        parent = value.get("parentClass")
        while isinstance(parent, dict) and str(parent.get("name") or "").strip():  # QuPath before 0.4
            above = str(parent["name"]).strip()
            name = name if name.strip().startswith(f"{above}:") else f"{above}: {name.strip()}"
            parent = parent.get("parentClass")
    elif isinstance(parts, list) and parts and all(isinstance(n, str) and n.strip() for n in parts):
        name = ": ".join(n.strip() for n in parts)
    else:
        return None, None
    colour = value.get("color")
    if isinstance(colour, list) and len(colour) >= 3 and all(_is_int(c) for c in colour[:3]):
        colour = tuple(int(c) & 255 for c in colour[:3])
    elif _is_int(value.get("colorRGB")):
        rgb = value["colorRGB"] & 0xFFFFFF
        colour = ((rgb >> 16) & 255, (rgb >> 8) & 255, rgb & 255)
    else:
        colour = None  # missing or not numbers: the class gets a default colour
    return _class_name(name), colour


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _class_name(name: str) -> str | None:
    """A class name as compared and stored: stripped, in Unicode NFC; None when blank."""
    name = unicodedata.normalize("NFC", name).strip()
    return name or None


def _csv_numbers(path: Path, cells: list[str]) -> list[float]:
    """A CSV row's ``x,y`` cells as numbers (CSV cells are text)."""
    try:
        return [float(c) for c in cells]
    except ValueError:
        raise InputError(f"{path.name} has a malformed coordinate {cells!r}; x and y must be numbers") from None


def _xy(path: Path, point) -> list[float]:
    numbers = isinstance(point, (list, tuple)) and len(point) >= 2
    numbers = numbers and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in point[:2])
    if not numbers:  # GeoJSON positions are JSON numbers; "12" or true is not one
        raise InputError(f"{path.name} has a malformed coordinate {point!r}; export it again from QuPath")
    x, y = float(point[0]), float(point[1])
    if not (np.isfinite(x) and np.isfinite(y)):
        raise InputError(f"{path.name} has a coordinate that is not finite ({point!r}); export it again from QuPath")
    return [x, y]


def _read_csv(path: Path) -> Annotations:
    xy, names = [], []
    columns = (0, 1, 2)  # x, y, class; a header names them in any order
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except UnicodeDecodeError:
        raise InputError(f'{path.name} is not UTF-8 text; save it as "CSV UTF-8" (x,y,class) and try again') from None
    for line_no, row in enumerate(rows, 1):
        if not row or all(not c.strip() for c in row):
            continue
        header = [c.strip().lower() for c in row]
        if line_no == 1 and {"x", "y", "class"} <= set(header):
            columns = tuple(header.index(c) for c in ("x", "y", "class"))
            continue
        if len(row) <= max(columns) or not row[columns[2]].strip():
            raise InputError(f"{path.name} line {line_no}: expected x,y,class, got {','.join(row)!r}")
        xy.append(_xy(path, _csv_numbers(path, [row[columns[0]], row[columns[1]]])))
        names.append(_class_name(row[columns[2]]))
    return Annotations(path, np.asarray(xy, np.float64).reshape(-1, 2), names)


def class_table(annotations: list[Annotations]) -> tuple[tuple[str, ...], tuple[tuple[int, int, int], ...]]:
    """The class names (sorted) and their colours over all files (QuPath's where given, no two alike:
    :func:`~muse_fast.post.classes.class_colours`); mixed-case duplicates are an error."""
    seen: dict[str, str] = {}
    for ann in annotations:
        for name in dict.fromkeys(ann.names):
            other = seen.setdefault(name.casefold(), name)
            if other != name:
                raise InputError(
                    f"class names {other!r} and {name!r} differ only in case ({ann.source.name}); use one spelling "
                    "for each class in QuPath"
                )
    names = tuple(sorted(seen.values(), key=str.casefold))
    given: dict[str, tuple[int, int, int]] = {}
    for ann in annotations:
        for k, v in ann.colours.items():
            given.setdefault(k, v)
    return names, tuple(class_colours(names, given))


def inside(xy: np.ndarray, ring: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test of ``xy [N, 2]`` against one exterior ``ring [M, 2]``."""
    x, y = xy[:, 0:1], xy[:, 1:2]
    x1, y1 = ring[:, 0], ring[:, 1]
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
    crosses = (y1 > y) != (y2 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        at = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
    return (crosses & (x < at)).sum(axis=1) % 2 == 1
