"""CPU seconds of the Parquet writer for 56 chunks of 593 nuclei (the mosaic's batches): a row group per chunk (as
before commit 2347dba) against row groups of ROW_GROUP_ROWS. Seven rounds, alternating; prints each round."""

import tempfile
import time
from pathlib import Path

import numpy as np

from muse_fast.output.atomic import StagedFiles
from muse_fast.output.writers import ParquetWriter
from muse_fast.runtime.predict import Nuclei

rng = np.random.default_rng(0)
n = 593
chunks = [
    Nuclei(
        rng.random((n, 2)) * 5000,
        rng.random(n).astype(np.float32),
        rng.integers(0, 3, n),
        rng.random(n).astype(np.float32),
    )
    for _ in range(56)
]
result = {"row group per chunk": [], "row groups of ROW_GROUP_ROWS": []}
for _ in range(7):
    for name in result:
        with tempfile.TemporaryDirectory() as folder, StagedFiles() as staged:
            path = Path(folder) / "n.parquet"
            start = time.thread_time()
            writer = ParquetWriter(path, staged.add(path), ("a", "b", "c"))
            for chunk in chunks:
                if name == "row group per chunk":
                    writer.writer.write_table(writer.table(chunk))
                else:
                    writer.write(chunk)
            writer.close()
            result[name].append(round(time.thread_time() - start, 4))
print(result)
