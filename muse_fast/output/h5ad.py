"""``<stem>.h5ad``: every kept nucleus with its point feature, row for row the CSV, in AnnData's on-disk format.

Written with h5py alone and streamed: each column is a chunked dataset that grows by every batch of nuclei, so memory
does not grow with the slide. ``anndata.read_h5ad`` (and so scanpy and squidpy) opens it as:

- ``X``: float16 ``[nuclei, D]``, the vector the point classifier is given, after the tile merge; ``var`` names the
  dimensions ``muse_0 ... muse_<D-1>`` (a slide without nuclei has ``D = 0``)
- ``obs``: ``x``, ``y`` (level-0 pixels), ``class_id``, ``class_name`` (categorical), ``score``,
  ``class_probability``; the index is the CSV row number, ``"0" ... "<N-1>"``
- ``obsm["spatial"]``: level-0 ``[x, y]``, as squidpy expects
- ``uns``: ``model``, ``weights_sha256``, ``mpp`` (the slide's level-0 microns per pixel), ``model_mpp``, ``classes``,
  ``engine``, ``slide`` (the file name), ``feature`` (what ``X`` holds)

No timestamps are recorded, so the same nuclei give the same bytes (a resumed run matches an uninterrupted one).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..model.weights import WeightsMeta
from ..runtime.predict import Nuclei
from .writers import CSV_COLUMNS, _TempOutput

PIP_COMMAND = 'pip install h5py anndata (in a clone: pip install -e ".[embeddings]")'
COLUMN_CHUNK = 1 << 14  # rows per HDF5 chunk of a 1-d column
FEATURE_CHUNK_BYTES = 1 << 19  # bytes per HDF5 chunk of X
FEATURE_NOTE = "MUSE point feature: the point classifier's input after the tile merge, float16"


def embeddings_unavailable_reason() -> str | None:
    """Why ``--embeddings`` cannot run here (h5py is missing, with the command that installs it), or None."""
    try:
        import h5py  # noqa: F401
    except ImportError:
        return (
            f"--embeddings needs the python package h5py to write <stem>.h5ad, and it is not installed: {PIP_COMMAND}"
        )
    return None


def embeddings_uns(meta: WeightsMeta, slide_mpp: float, fingerprint: dict, slide_name: str) -> dict:
    """The ``uns`` of a slide's file: the model, its weights' hash and engine (from the run's fingerprint), the mpp."""
    uns = {
        "model": meta.model,
        "weights_sha256": fingerprint.get("weights"),
        "engine": fingerprint.get("engine"),
        "mpp": float(slide_mpp),
        "model_mpp": float(meta.mpp),
        "classes": list(meta.classes),
        "slide": slide_name,
        "feature": FEATURE_NOTE,
    }
    return {k: v for k, v in uns.items() if v is not None}


def _encode(obj, kind: str, version: str = "0.2.0") -> None:
    obj.attrs["encoding-type"] = kind
    obj.attrs["encoding-version"] = version


class H5adWriter(_TempOutput):
    """Appends nuclei (level-0 ``xy`` and ``feat``) to ``tmp``; ``close`` adds the index, ``var`` and ``uns``."""

    def __init__(self, path: Path, tmp: Path, classes: tuple[str, ...], uns: dict) -> None:
        import h5py

        super().__init__(path, tmp)
        self.h5py, self.uns, self.rows = h5py, uns, 0
        # "x": created with O_EXCL, so never through a link; no lock: the temp file is ours alone, also on NFS
        self.file = h5py.File(self.tmp, "x", locking=False)
        _encode(self.file, "anndata", "0.1.0")
        self.obs = self._group(self.file, "obs", "dataframe")
        columns = {"x": "f8", "y": "f8", "class_id": "i8", "score": "f4", "class_probability": "f4"}
        self.obs.attrs["_index"] = "_index"
        self.obs.attrs["column-order"] = list(CSV_COLUMNS)
        self.columns = {name: self._column(self.obs, name, dtype) for name, dtype in columns.items()}
        names = self._group(self.obs, "class_name", "categorical")
        names.attrs["ordered"] = False
        self._strings(names, "categories", list(classes))
        self.codes = self._column(names, "codes", np.min_scalar_type(-max(len(classes), 1)))
        obsm = self._group(self.file, "obsm")
        self.spatial = self._column(obsm, "spatial", "f8", (2,))
        self.features = None  # X: created with the first nuclei, when the feature size is known
        for name in ("obsp", "varm", "varp", "layers"):
            self._group(self.file, name)

    def _group(self, parent, name: str, kind: str = "dict"):
        """A group that records no creation time (HDF5 stores one by default)."""
        h5py = self.h5py
        plist = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
        plist.set_obj_track_times(False)
        group = h5py.Group(h5py.h5g.create(parent.id, name.encode(), gcpl=plist))
        _encode(group, kind, "0.1.0" if kind == "dict" else "0.2.0")
        return group

    def _column(self, parent, name: str, dtype, tail: tuple[int, ...] = ()):
        """An empty, growable array; chunks hold about :data:`FEATURE_CHUNK_BYTES` (at most COLUMN_CHUNK rows)."""
        width = int(np.prod(tail, dtype=np.int64)) * np.dtype(dtype).itemsize
        rows = max(1, min(COLUMN_CHUNK, FEATURE_CHUNK_BYTES // max(width, 1)))
        data = parent.create_dataset(
            name, (0, *tail), dtype, maxshape=(None, *tail), chunks=(rows, *tail), track_times=False
        )
        _encode(data, "array")
        return data

    def _strings(self, parent, name: str, values: list[str]) -> None:
        data = parent.create_dataset(name, data=values, dtype=self.h5py.string_dtype(), track_times=False)
        _encode(data, "string-array")

    @staticmethod
    def _append(data, values: np.ndarray) -> None:
        start = data.shape[0]
        data.resize(start + len(values), axis=0)
        data[start:] = values

    def write(self, nuclei: Nuclei) -> None:
        if not len(nuclei):
            return
        if nuclei.feat is None:
            raise ValueError("nuclei without point features reached the embeddings writer (decode with features)")
        if self.features is None:
            self.features = self._column(self.file, "X", "f2", (nuclei.feat.shape[1],))
        self._append(self.features, nuclei.feat.astype(np.float16))
        values = {
            "x": nuclei.xy[:, 0],
            "y": nuclei.xy[:, 1],
            "class_id": nuclei.class_id,
            "score": nuclei.score,
            "class_probability": nuclei.class_prob,
        }
        for name, column in self.columns.items():
            self._append(column, values[name])
        self._append(self.codes, nuclei.class_id)
        self._append(self.spatial, nuclei.xy)
        self.rows += len(nuclei)

    def close(self) -> None:
        if self.features is None:  # no nuclei: no feature size either
            self.features = self.file.create_dataset("X", (0, 0), "f2", track_times=False)
            _encode(self.features, "array")
        self._labels(self.obs, self.rows)
        var = self._group(self.file, "var", "dataframe")
        var.attrs["_index"] = "_index"
        var.attrs["column-order"] = np.zeros(0, "f8")  # what anndata writes for a frame without columns
        self._labels(var, self.features.shape[1], "muse_")
        uns = self._group(self.file, "uns")
        for key, value in self.uns.items():
            if isinstance(value, (list, tuple)):
                self._strings(uns, key, [str(v) for v in value])
                continue
            text = isinstance(value, str)
            dtype = self.h5py.string_dtype() if text else None
            _encode(
                uns.create_dataset(key, data=value, dtype=dtype, track_times=False),
                "string" if text else "numeric-scalar",
            )
        super().close()

    def _labels(self, frame, count: int, prefix: str = "") -> None:
        """The frame's ``_index``: ``prefix0 ... prefix<count-1>`` as fixed-width ASCII, written a chunk at a time."""
        width = len(prefix) + len(str(max(count - 1, 0)))
        chunks = (min(count, COLUMN_CHUNK),) if count else None
        data = frame.create_dataset("_index", (count,), f"S{width}", chunks=chunks, track_times=False)
        _encode(data, "string-array")
        for start in range(0, count, COLUMN_CHUNK):
            numbers = np.arange(start, min(count, start + COLUMN_CHUNK)).astype("S")
            data[start : start + len(numbers)] = np.char.add(prefix.encode(), numbers)

    def _close(self) -> None:
        self.file.close()
