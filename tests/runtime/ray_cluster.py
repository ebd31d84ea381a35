"""A Ray cluster on this machine only, for tests and benchmarks: bound to 127.0.0.1, no usage stats, shut down after.

Without Ray installed, the caller's test is skipped with the command that installs it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest


@contextlib.contextmanager
def local_cluster(num_cpus: int) -> Iterator[object]:
    saved = dict(os.environ)
    # read when ray is imported and by the processes it starts: every service then binds to 127.0.0.1
    os.environ.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0")
    try:
        ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[ray]'")
        ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level="error")
        try:
            assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
            yield ray
        finally:
            ray.shutdown()
    finally:
        os.environ.clear()
        os.environ.update(saved)
