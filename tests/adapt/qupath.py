"""Annotation files written the way QuPath exports them (File > Export objects as GeoJSON)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np

# QuPath's default class colours (PathClass defaults), as its exports write them
QUPATH_COLOURS = {
    "Tumor": [200, 0, 0],
    "Stroma": [150, 200, 150],
    "Immune cells": [160, 90, 160],
    "Other": [255, 200, 0],
    "Necrosis": [50, 50, 50],
}


def point_set(name: str, xy: np.ndarray, colour: list[int], legacy: bool = False) -> dict:
    """One points-tool annotation: a MultiPoint of one class (QuPath >= 0.4; ``legacy``: 0.2's id and colorRGB)."""
    classification = {"name": name, "color": colour}
    if legacy:
        r, g, b = colour
        classification = {"name": name, "colorRGB": -(1 << 24) + (r << 16) + (g << 8) + b}  # signed ARGB
    feature = {
        "type": "Feature",
        "id": "PathAnnotationObject" if legacy else str(uuid.uuid4()),
        "geometry": {"type": "MultiPoint", "coordinates": [[float(x), float(y)] for x, y in xy]},
        "properties": {"objectType": "annotation", "classification": classification},
    }
    if legacy:
        feature["properties"].update({"isLocked": False, "measurements": []})
    return feature


def rectangle(x0: float, y0: float, x1: float, y1: float) -> dict:
    """A rectangle-tool annotation without a class: a complete region."""
    ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    return {
        "type": "Feature",
        "id": str(uuid.uuid4()),
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {"objectType": "annotation"},
    }


def line(x0: float, y0: float, x1: float, y1: float) -> dict:
    return {
        "type": "Feature",
        "id": str(uuid.uuid4()),
        "geometry": {"type": "LineString", "coordinates": [[x0, y0], [x1, y1]]},
        "properties": {"objectType": "annotation"},
    }


def write_qupath(path: Path, features: list[dict], legacy: bool = False) -> Path:
    """A FeatureCollection (QuPath >= 0.4) or, with ``legacy``, the bare list of features that 0.2 wrote."""
    data = features if legacy else {"type": "FeatureCollection", "features": features}
    path.write_text(json.dumps(data, indent=2))
    return path


def points_by_class(xy: np.ndarray, labels: np.ndarray, names: list[str], legacy: bool = False) -> list[dict]:
    """One MultiPoint per class, as the points tool exports them."""
    return [
        point_set(name, xy[labels == c], QUPATH_COLOURS.get(name, [0, 114, 178]), legacy)
        for c, name in enumerate(names)
        if (labels == c).any()
    ]
