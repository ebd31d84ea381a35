"""``muse-fast view``: a local zoomable viewer of a run's slides with their nuclei, class layers and density maps.

It reads only what ``infer`` wrote (manifests, the CSV or Parquet table, the tissue mask) and the slide images
through the project's readers; it never reruns the network and needs no network itself.
"""

from __future__ import annotations

from pathlib import Path

from .runs import find_runs
from .server import ViewerApp, serve


def view(out_dir: Path, slide: Path | None = None, host: str = "127.0.0.1", port: int = 8765) -> int:
    """Serve the finished runs in ``out_dir`` until Ctrl-C; ``slide`` is the image (or its folder) if it moved."""
    app = ViewerApp(find_runs(Path(out_dir), slide))
    serve(app, host, port)
    return 0


__all__ = ["ViewerApp", "find_runs", "serve", "view"]
