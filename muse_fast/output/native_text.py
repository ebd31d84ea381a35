"""Rows of the GeoJSON and CSV outputs formatted by the native library (``csrc/format.cpp``): the same bytes as the
writers' Python formatting, about 9x faster (dense slides write millions of rows).

:func:`rows` answers None where the library is not built (the writers then format in Python) or a chunk holds a
number the native path does not cover (not finite, or so large that Python writes fewer decimals), or a class text
holds a NUL character.
"""

from __future__ import annotations

import ctypes

import numpy as np

from muse_fast.errors import BackendUnavailable
from muse_fast.kernels import native

from ..runtime.predict import Nuclei

FUNCTIONS = {"geojson": "muse_format_geojson", "csv": "muse_format_csv"}
ROW_BYTES = 320  # a row's text beside its class text: fixed keys and five numbers under 2^39 (at most 24 bytes each)
NATIVE_LIMIT = 2.0**39  # beyond it adjacent doubles are 1e-4 or more apart and repr writes fewer than 4 decimals


class ClassTexts:
    """Each class's text as a format writes it, kept as C strings for the library (``usable``: none holds a NUL,
    which would end its C string)."""

    def __init__(self, texts: list[str]) -> None:
        self.encoded = [t.encode() for t in texts]
        self.usable = all(b"\0" not in e for e in self.encoded)
        self.array = (ctypes.c_char_p * max(len(texts), 1))(*self.encoded)
        self.longest = max((len(e) for e in self.encoded), default=0)


def rows(kind: str, nuclei: Nuclei, classes: ClassTexts) -> str | None:
    """The rows of ``nuclei`` as ``kind`` ("geojson": features joined by ",\\n"; "csv": lines ending in CRLF), or
    None where the Python formatting must write them (module doc)."""
    if not classes.usable:
        return None
    try:
        lib = native.library("cpu")
    except BackendUnavailable:
        return None
    n = len(nuclei)
    xy = np.ascontiguousarray(nuclei.xy, np.float64)
    score = np.ascontiguousarray(nuclei.score, np.float64)
    prob = np.ascontiguousarray(nuclei.class_prob, np.float64)
    numbers = (xy, score, prob)
    if not all(np.isfinite(a).all() and (np.abs(a) < NATIVE_LIMIT).all() for a in numbers):
        return None
    class_id = np.ascontiguousarray(nuclei.class_id, np.int64)
    cap = n * (ROW_BYTES + classes.longest)
    out = ctypes.create_string_buffer(max(cap, 1))
    written = ctypes.c_int64()
    native.call(lib, FUNCTIONS[kind], xy.ctypes.data, class_id.ctypes.data, score.ctypes.data, prob.ctypes.data, n,
                classes.array, len(classes.encoded), out, cap, ctypes.byref(written))  # fmt: skip
    return ctypes.string_at(out, written.value).decode()
