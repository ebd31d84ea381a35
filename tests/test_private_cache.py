"""The test suite never writes into the user's cache: export.cache.cache_dir() points into pytest's temp folder."""

import os
import subprocess
import sys
from pathlib import Path

from muse_fast.export.cache import cache_dir


def test_the_cache_is_a_temp_folder_of_this_run(tmp_path_factory):
    assert cache_dir().is_relative_to(tmp_path_factory.getbasetemp())
    assert not cache_dir().is_relative_to(Path.home() / ".cache")


def test_processes_started_by_tests_inherit_it():
    code = "from muse_fast.export.cache import cache_dir; print(cache_dir())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ)
    assert Path(out.stdout.strip()) == cache_dir()
