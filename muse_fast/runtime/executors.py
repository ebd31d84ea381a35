"""Thread pools that drop their queued work when the code using them fails or is interrupted."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager


@contextmanager
def cancel_on_error(*executors: ThreadPoolExecutor) -> Iterator[None]:
    """On an error or interrupt, drop the jobs not yet started, so that the executors' exits wait only for those
    running (Ctrl-C and SIGTERM end a run within the running job, not after every queued one)."""
    try:
        yield
    except BaseException:
        for executor in executors:
            executor.shutdown(wait=False, cancel_futures=True)
        raise
