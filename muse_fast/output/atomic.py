"""Write-to-temp-then-rename, so that a crash never leaves a half-written output under its final name."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def partial_path(path: str | Path) -> Path:
    """The hidden temporary name beside ``path`` (``.NAME.partial``) that is renamed to ``path`` when complete."""
    path = Path(path)
    return path.with_name(f".{path.name}.partial")


@contextlib.contextmanager
def atomic_write(path: Path, mode: str = "w") -> Iterator[IO]:
    path = Path(path)
    tmp = partial_path(path)
    try:
        with open(tmp, mode, newline="" if "b" not in mode else None) as fh:
            yield fh
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
