"""``benchmarks/adapt_measure.py sweep``: one network pass per image, decoded at each threshold, scores exactly what
``score`` gives at that threshold (the cached outputs replay in order for every threshold)."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "adapt_measure.py"


def load_script():
    spec = importlib.util.spec_from_file_location("adapt_measure_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sweep_scores_each_threshold_as_score_does(brca_dir, monkeypatch):
    measure = load_script()
    full = measure.test_set
    monkeypatch.setattr(measure, "test_set", lambda *a, **k: (full(*a, **k)[0][:4], 1.0))  # 4 test images
    at_default = measure.score(None, "brca")["mcspatnet"]  # decoded at DecodeConfig's threshold, 0.3
    rows = measure.sweep(None, "brca", (0.2, 0.3))
    assert [r["threshold"] for r in rows] == [0.2, 0.3] and measure.DecodeConfig.threshold == 0.3
    keys = ("det_precision", "det_recall", "det_f1", "macro_f1")
    assert rows[1] == {"threshold": 0.3, **{k: at_default[k] for k in keys}}
    assert rows[0]["det_recall"] > rows[1]["det_recall"]  # a lower threshold finds more of the nuclei
