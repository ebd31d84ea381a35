"""Fixtures of the viewer's tests: one real infer run on the CMU slide (about 10 s on 2 CPU cores), and a server."""

import csv
from pathlib import Path

import numpy as np
import pytest
from view_server import start_server

from muse_fast.cli import main


@pytest.fixture(scope="session")
def cmu_run(cmu_svs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cmu-run")
    assert main(["infer", str(cmu_svs), "--out", str(out), "--quiet"]) == 0
    return out


@pytest.fixture(scope="session")
def cmu_nuclei(cmu_run) -> dict[str, np.ndarray]:
    """The CSV that infer wrote, as arrays."""
    with open(cmu_run / "CMU-1-Small-Region.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {
        "xy": np.array([[float(r["x"]), float(r["y"])] for r in rows]),
        "class_id": np.array([int(r["class_id"]) for r in rows]),
        "class_name": np.array([r["class_name"] for r in rows]),
        "score": np.array([float(r["score"]) for r in rows]),
        "prob": np.array([float(r["class_probability"]) for r in rows]),
    }


@pytest.fixture(scope="module")
def viewer(cmu_run):
    """The base URL of a viewer serving the CMU run."""
    server, app, url = start_server(cmu_run)
    yield url
    server.shutdown()
    server.server_close()
    app.close()
