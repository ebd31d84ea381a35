"""Large CPU buffers kept for the next batch instead of mapped afresh: glibc's malloc tuned once per process.

glibc serves a block above its mmap threshold (128 KB, raised as blocks are freed, at most 32 MB) with a fresh
``mmap`` and returns it with ``munmap`` when freed. A network's activations (tens of MB per batch of 16 tiles) are then
page-faulted and zeroed by the kernel on every batch. With ``M_MMAP_MAX`` 0 every block comes from the heap, and with
a high ``M_TRIM_THRESHOLD`` freed memory stays in the process for the next batch. On a quiet 2-core AMX Xeon the
compiled ``muse_r18`` went from about 13,000 minor page faults per batch to 400-1,600, and eager torch from 29-30 to
32-33 tiles/s in fp32 and from 98-102 to 113-119 in bf16 (docs/results.md). The compiled engine's own spread between
processes (about 125 or about 180-205 tiles/s) is not explained by this: it was where its weights landed
(:mod:`.aligned_package`).
``MUSE_FAST_MALLOC=system`` keeps glibc's defaults (the reference path).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
import threading

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)
TRIM_THRESHOLD = 512 << 20  # free memory at the heap's top returned to the system only above this
ENV = "MUSE_FAST_MALLOC"
_lock = threading.Lock()
_state: str | None = None


def _mallopt():
    """glibc's ``mallopt``, or None (another C library, another system)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        if not hasattr(libc, "gnu_get_libc_version"):  # musl has mallopt too, but not these parameters
            return None
        return libc.mallopt
    except OSError:
        return None


def keep_large_buffers() -> str:
    """Tune glibc's malloc for repeated large buffers, once per process (module doc).

    Returns what happened: ``tuned`` (now or earlier in this process), ``system`` (``MUSE_FAST_MALLOC=system``) or
    ``unavailable`` (not glibc).
    """
    global _state
    with _lock:
        if _state is None:
            _state = _tune()
        return _state


def _tune() -> str:
    if os.environ.get(ENV, "") == "system":
        return "system"
    mallopt = _mallopt()
    if mallopt is None:
        return "unavailable"
    if not (mallopt(M_MMAP_MAX, 0) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        log.debug("mallopt refused the settings; glibc's defaults stay")
        return "unavailable"
    return "tuned"
