"""A viewer server on a free loopback port, in a thread (for the viewer's tests)."""

import threading
from pathlib import Path

from muse_fast.view.runs import find_runs
from muse_fast.view.server import ViewerApp, make_server


def start_server(out: Path, slide: Path | None = None):
    app = ViewerApp(find_runs(out, slide))
    server = make_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return server, app, f"http://127.0.0.1:{server.server_address[1]}"
