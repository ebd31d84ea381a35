"""Every script in benchmarks/ imports against the package as it is now: a function moved or renamed in muse_fast
must not leave a measurement script broken until someone runs it (compare_engines.py imported a helper that had
moved). Importing runs a script's imports and definitions, never its measurement (that waits for ``__main__``)."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p for p in BENCHMARKS.glob("*.py") if p.name != "conftest.py" and not p.name.startswith("test_"))


def test_the_scripts_are_found():
    assert {"compare_engines.py", "adapt_measure.py", "gpu_check.py"} <= {p.name for p in SCRIPTS}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_a_benchmark_script_imports(script, monkeypatch):
    source = script.read_text()
    assert 'if __name__ == "__main__":' in source or "def main" not in source, "its measurement must wait for __main__"
    monkeypatch.setattr(sys, "argv", [str(script)])
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # scripts import their neighbours as top-level modules
    spec = importlib.util.spec_from_file_location(f"bench_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
