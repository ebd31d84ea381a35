"""QuPath-ready GeoJSON: a FeatureCollection of Point detections with a classification and a score."""

from __future__ import annotations

import json
from pathlib import Path

from ..post.classes import class_colour
from ..runtime.predict import Nuclei
from .atomic import atomic_write


def write_geojson(path: Path, nuclei: Nuclei, classes: tuple[str, ...]) -> None:
    """Stream one Feature per nucleus (level-0 pixel coordinates) into ``path`` atomically."""
    colours = [list(class_colour(name, i)) for i, name in enumerate(classes)]
    with atomic_write(path) as fh:
        fh.write('{"type": "FeatureCollection", "features": [')
        for i in range(len(nuclei)):
            c = int(nuclei.class_id[i])
            feature = {
                "type": "Feature",
                "geometry": {
                    "type": "Point",
                    "coordinates": [round(float(nuclei.xy[i, 0]), 2), round(float(nuclei.xy[i, 1]), 2)],
                },
                "properties": {
                    "objectType": "detection",
                    "classification": {"name": classes[c], "color": colours[c]},
                    "score": round(float(nuclei.score[i]), 4),
                    "measurements": {
                        "score": round(float(nuclei.score[i]), 4),
                        "class_probability": round(float(nuclei.class_prob[i]), 4),
                    },
                },
            }
            fh.write(("," if i else "") + "\n" + json.dumps(feature))
        fh.write("\n]}\n")
