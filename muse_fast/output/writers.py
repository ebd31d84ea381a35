"""Streaming writers for nuclei: QuPath GeoJSON, CSV, Parquet when pyarrow is installed, and with embeddings the
AnnData file of point features (:mod:`muse_fast.output.h5ad`).

Each writer takes chunks of nuclei as they are produced and writes to a hidden temporary file staged in a
:class:`~muse_fast.output.atomic.StagedFiles`; ``NucleiWriters`` completes them all when its block succeeds, and the
caller renames them (``StagedFiles.commit``). On any exception every writer is closed and its file removed, even
when closing fails on a full disk, so a crash never leaves a half-written output under its final name.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
from pathlib import Path

import numpy as np

from ..post.classes import class_colours
from ..runtime.predict import Nuclei
from .atomic import StagedFiles, remove_quietly
from .native_text import ClassTexts, rows
from .regular import exclusive
from .text import csv_cell

CSV_COLUMNS = ("x", "y", "class_id", "class_name", "score", "class_probability")
ROW_GROUP_ROWS = 65_536  # nuclei per Parquet row group


class _TempOutput:
    """Writes to the temporary file ``tmp`` for ``path``; ``close`` completes it, ``abort`` closes and removes it."""

    def __init__(self, path: Path, tmp: Path) -> None:
        self.path = Path(path)
        self.tmp = Path(tmp)

    def _close(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._close()

    def abort(self) -> None:
        try:
            self._close()
        except Exception:  # noqa: BLE001 - a full disk fails the last flush; the file goes anyway
            pass
        remove_quietly(self.tmp)


class _TempFile(_TempOutput):
    def __init__(self, path: Path, tmp: Path, mode: str = "w") -> None:
        super().__init__(path, tmp)
        self.fh = open(self.tmp, exclusive(mode), newline="" if "b" not in mode else None)

    def _close(self) -> None:
        self.fh.close()


class GeoJSONWriter(_TempFile):
    """A FeatureCollection of Point detections (level-0 pixels) with ``classification`` and score."""

    def __init__(self, path: Path, tmp: Path, classes: tuple[str, ...], unreadable_regions: list | None = None) -> None:
        super().__init__(path, tmp)
        self.classes = classes
        self.colours = [list(c) for c in class_colours(classes)]
        self.classification_json = [json.dumps({"name": n, "color": c}) for n, c in zip(classes, self.colours)]
        self.native_classes = ClassTexts(self.classification_json)
        self.count = 0
        self.unreadable_regions = unreadable_regions or []
        self.fh.write('{"type": "FeatureCollection", "features": [')

    def write(self, nuclei: Nuclei) -> None:
        if not _finite(nuclei):  # json spells NaN and infinity its own way: the reference path writes them
            self.write_reference(nuclei)
            return
        if not len(nuclei):
            return
        text = rows("geojson", nuclei, self.native_classes)
        if text is None:
            text = ",\n".join(self.python_rows(nuclei))
        self.fh.write(("," if self.count else "") + "\n" + text)
        self.count += len(nuclei)

    def python_rows(self, nuclei: Nuclei) -> list[str]:
        """The text json.dumps gives for each feature dict of :meth:`write_reference`, formatted directly (33,000
        nuclei: 0.31 s -> 0.13 s on a busy 2-core Xeon; the native library formats it in about a tenth of that)."""
        classes = self.classification_json
        return [
            f'{{"type": "Feature", "geometry": {{"type": "Point", "coordinates": [{round(x, 2)!r}, {round(y, 2)!r}]}}, '
            f'"properties": {{"objectType": "detection", "classification": {classes[c]}, "score": {round(s, 4)!r}, '
            f'"measurements": {{"score": {round(s, 4)!r}, "class_probability": {round(p, 4)!r}}}}}}}'
            for (x, y), c, s, p in zip(
                nuclei.xy.tolist(), nuclei.class_id.tolist(), nuclei.score.tolist(), nuclei.class_prob.tolist()
            )
        ]

    def write_reference(self, nuclei: Nuclei) -> None:
        """One ``json.dumps`` per nucleus (the reference path of :meth:`write`)."""
        for (x, y), c, s, p in zip(nuclei.xy, nuclei.class_id, nuclei.score, nuclei.class_prob):
            c = int(c)
            feature = {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [round(float(x), 2), round(float(y), 2)]},
                "properties": {
                    "objectType": "detection",
                    "classification": {"name": self.classes[c], "color": self.colours[c]},
                    "score": round(float(s), 4),
                    "measurements": {"score": round(float(s), 4), "class_probability": round(float(p), 4)},
                },
            }
            self.fh.write(("," if self.count else "") + "\n" + json.dumps(feature))
            self.count += 1

    def close(self) -> None:
        # a foreign member (RFC 7946 6.1): QuPath ignores it; it lists the level-0 [x, y, w, h] skipped as damaged
        self.fh.write(f'\n], "unreadable_regions": {json.dumps(self.unreadable_regions)}}}\n')
        super().close()


class CSVWriter(_TempFile):
    """``x,y`` in level-0 pixels, ``class_id,class_name,score,class_probability``; class names that a spreadsheet
    would run as a formula are neutralised (:func:`~muse_fast.output.text.csv_cell`), numbers are written as they are.
    """

    def __init__(self, path: Path, tmp: Path, classes: tuple[str, ...]) -> None:
        super().__init__(path, tmp)
        self.classes = tuple(csv_cell(name) for name in classes)
        self.writer = csv.writer(self.fh)
        self.writer.writerow(CSV_COLUMNS)
        self.class_cells = [_csv_row((name,)).rstrip("\r\n") for name in self.classes]  # quoted as csv.writer does
        self.native_cells = ClassTexts(self.class_cells)

    def write(self, nuclei: Nuclei) -> None:
        """The rows :meth:`write_reference` writes, formatted directly (numbers never need quoting): by the native
        library where it is built, else in Python."""
        text = rows("csv", nuclei, self.native_cells)
        self.fh.write(self.python_rows(nuclei) if text is None else text)

    def python_rows(self, nuclei: Nuclei) -> str:
        cells = self.class_cells
        return "".join(
            f"{x:.2f},{y:.2f},{c},{cells[c]},{s:.4f},{p:.4f}\r\n"
            for (x, y), c, s, p in zip(
                nuclei.xy.tolist(), nuclei.class_id.tolist(), nuclei.score.tolist(), nuclei.class_prob.tolist()
            )
        )

    def write_reference(self, nuclei: Nuclei) -> None:
        """One ``csv.writer`` row per nucleus (the reference path of :meth:`write`)."""
        for (x, y), c, s, p in zip(nuclei.xy, nuclei.class_id, nuclei.score, nuclei.class_prob):
            self.writer.writerow((f"{x:.2f}", f"{y:.2f}", int(c), self.classes[int(c)], f"{s:.4f}", f"{p:.4f}"))


def _csv_row(cells: tuple) -> str:
    """One row as ``csv.writer`` (its defaults) writes it."""
    buf = io.StringIO()
    csv.writer(buf).writerow(cells)
    return buf.getvalue()


class ParquetWriter(_TempOutput):
    """The same table as the CSV, as Parquet row groups of :data:`ROW_GROUP_ROWS` nuclei (the last one shorter; only
    when pyarrow is installed). Chunks are held until a row group is full: a write per batch of tiles cost 0.5 ms and
    made row groups of a few hundred rows, which readers pay for too."""

    def __init__(self, path: Path, tmp: Path, classes: tuple[str, ...]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        super().__init__(path, tmp)
        self.pa, self.classes = pa, classes
        self.fh = open(self.tmp, "xb")  # exclusive creation: never through a link
        schema = pa.schema(
            [
                ("x", pa.float64()),
                ("y", pa.float64()),
                ("class_id", pa.int64()),
                ("class_name", pa.string()),
                ("score", pa.float32()),
                ("class_probability", pa.float32()),
            ]
        )
        try:
            self.writer = pq.ParquetWriter(self.fh, schema)
        except BaseException:
            self.fh.close()
            raise
        self.pending: list[Nuclei] = []
        self.pending_rows = 0

    def write(self, nuclei: Nuclei) -> None:
        if len(nuclei):
            self.pending.append(Nuclei(nuclei.xy, nuclei.score, nuclei.class_id, nuclei.class_prob))  # no features
            self.pending_rows += len(nuclei)
        if self.pending_rows >= ROW_GROUP_ROWS:
            self._flush(full_groups_only=True)

    def _flush(self, full_groups_only: bool = False) -> None:
        """Write the rows held as row groups of :data:`ROW_GROUP_ROWS`; with ``full_groups_only`` the rows that do
        not fill a group stay held."""
        if not self.pending:
            return
        rows = Nuclei.concat(self.pending)
        n = len(rows) - len(rows) % ROW_GROUP_ROWS if full_groups_only else len(rows)
        self.writer.write_table(self.table(rows.select(slice(0, n))), row_group_size=ROW_GROUP_ROWS)
        rest = rows.select(slice(n, None))
        self.pending, self.pending_rows = ([rest] if len(rest) else []), len(rest)

    def close(self) -> None:
        self._flush()  # on an error NucleiWriters aborts every writer, this one included
        self._close()

    def table(self, nuclei: Nuclei):
        """The chunk as an Arrow table built from its buffers: ``pa.array`` and ``pa.table`` on numpy data import
        pandas (0.25-0.5 s in a fresh process) to check for pandas objects; the same table as :meth:`table_reference`.
        """
        pa, n = self.pa, len(nuclei)

        def column(values: np.ndarray, dtype, np_dtype):
            return pa.Array.from_buffers(dtype, n, [None, pa.py_buffer(np.ascontiguousarray(values, np_dtype))])

        encoded = [name.encode() for name in self.classes]
        lengths = np.array([len(e) for e in encoded], np.int64)[nuclei.class_id]
        offsets = np.zeros(n + 1, np.int32)
        np.cumsum(lengths, out=offsets[1:])
        names = pa.Array.from_buffers(
            pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded[c] for c in nuclei.class_id))]
        )
        columns = [
            column(nuclei.xy[:, 0], pa.float64(), np.float64),
            column(nuclei.xy[:, 1], pa.float64(), np.float64),
            column(nuclei.class_id, pa.int64(), np.int64),
            names,
            column(nuclei.score, pa.float32(), np.float32),
            column(nuclei.class_prob, pa.float32(), np.float32),
        ]
        return pa.Table.from_arrays(columns, schema=self.writer.schema)

    def table_reference(self, nuclei: Nuclei):
        """The chunk as an Arrow table through ``pa.table`` (the reference for :meth:`table`)."""
        names = [self.classes[int(c)] for c in nuclei.class_id]
        return self.pa.table(
            {
                "x": nuclei.xy[:, 0],
                "y": nuclei.xy[:, 1],
                "class_id": nuclei.class_id,
                "class_name": names,
                "score": nuclei.score,
                "class_probability": nuclei.class_prob,
            },
            schema=self.writer.schema,
        )

    def _close(self) -> None:
        try:
            self.writer.close()
        finally:
            self.fh.close()


def _finite(nuclei: Nuclei) -> bool:
    return bool(
        np.isfinite(nuclei.xy).all() and np.isfinite(nuclei.score).all() and np.isfinite(nuclei.class_prob).all()
    )


def parquet_available() -> bool:
    return importlib.util.find_spec("pyarrow") is not None


class NucleiWriters:
    """All table outputs of one slide, staged in ``staged``; a context manager that completes every file on success
    and closes and removes them all on any exception (the caller renames them: ``staged.commit()``)."""

    def __init__(
        self,
        out_dir: Path,
        stem: str,
        classes: tuple[str, ...],
        staged: StagedFiles,
        unreadable_regions: list | None = None,
        embeddings: dict | None = None,
    ) -> None:
        """``embeddings``: the ``uns`` of ``<stem>.h5ad``, written only when given (nuclei then carry ``feat``)."""
        kinds = [("geojson", GeoJSONWriter, (unreadable_regions,)), ("csv", CSVWriter, ())]
        if parquet_available():
            kinds.append(("parquet", ParquetWriter, ()))
        if embeddings is not None:
            from .h5ad import H5adWriter  # it builds on _TempOutput, so it imports this module

            kinds.append(("h5ad", H5adWriter, (embeddings,)))
        self.writers: list[_TempOutput] = []
        try:
            for suffix, cls, extra in kinds:
                path = out_dir / f"{stem}.{suffix}"
                self.writers.append(cls(path, staged.add(path), classes, *extra))
        except BaseException:
            self._abort()
            raise

    @property
    def paths(self) -> list[Path]:
        return [w.path for w in self.writers]

    def write(self, nuclei: Nuclei) -> None:
        for w in self.writers:
            w.write(nuclei)

    def _abort(self) -> None:
        for w in self.writers:
            w.abort()

    def __enter__(self) -> NucleiWriters:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._abort()
            return
        try:
            for w in self.writers:
                w.close()
        except BaseException:
            self._abort()
            raise
