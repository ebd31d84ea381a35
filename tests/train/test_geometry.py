"""train.geometry: what the detection geometry (target, stride, peak window) can return at all."""

import json

import numpy as np
import pytest

from muse_fast.train import geometry
from muse_fast.train.data.nucls import nucls_dir


def test_separated_nuclei_come_back_exactly():
    xy = np.array([[10.3, 12.7], [30.0, 41.5], [60.9, 8.2], [45.5, 70.25]])
    out = geometry.decode_ideal_target(xy, 80)
    order = np.lexsort((out[:, 0], out[:, 1]))
    np.testing.assert_allclose(out[order], xy[np.lexsort((xy[:, 0], xy[:, 1]))], atol=1e-5)


@pytest.mark.parametrize(
    "dx,kept_window3,kept_window5",
    [(1.0, 1, 1), (4.0, 1, 1), (8.0, 2, 1), (12.0, 2, 2)],  # same cell, neighbouring cells, 2 and 3 cells apart
)
def test_close_nuclei_merge_by_cell_and_window(dx, kept_window3, kept_window5):
    xy = np.array([[20.5, 20.5], [20.5 + dx, 20.5]])
    assert len(geometry.decode_ideal_target(xy, 48, min_distance=1)) == kept_window3
    assert len(geometry.decode_ideal_target(xy, 48, min_distance=2)) == kept_window5


def test_cli_reports_recall_by_spacing(tmp_path, capsys):
    if not nucls_dir().is_dir():
        pytest.skip(
            f"{nucls_dir()} not found; it holds crops of NuCLS (CC0, sites.google.com/view/nucls): "
            "set MUSE_DATA to the folder holding nucls-subset/"
        )
    assert geometry.main(["--data", "nucls", "--json", str(tmp_path / "g.json")]) == 0
    report = json.loads((tmp_path / "g.json").read_text())
    assert report["n_gt"] == 584 and report["det_precision"] == 1.0  # the ideal target invents nothing
    spacing = report["recall_by_spacing"]
    assert spacing["8-inf um"]["recall"] == 1.0 and spacing["0-4 um"]["recall"] < 1.0  # only close pairs are lost
    assert "window 3" in capsys.readouterr().out
