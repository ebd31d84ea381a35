"""``muse-fast view``: a local HTTP server (standard library only) for the page in ``static/`` and its JSON/binary API.

No request path is ever joined onto a folder: the page's files come from a fixed table built at start-up, and a
slide's files are found by the stem of a finished run (see :mod:`muse_fast.view.runs`), so nothing outside OUT_DIR
and the slides' own files can be served. A path with a ``.`` or ``..`` segment, or a backslash, NUL or encoded ``/``
in a segment, gets 403.

Routes (all GET): ``/`` and ``/static/<file>``; ``/api/slides``; ``/api/slide/<stem>`` (info);
``/api/tile/<stem>/<level>/<col>_<row>.jpg``; ``/api/points/<stem>?x0&y0&x1&y1&scale[&classes=0,2]``;
``/api/nucleus/<stem>?x&y&r[&classes]``; ``/api/density/<stem>?class=K``; ``/api/layer/<stem>/tissue.png``.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import socket
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np

from ..errors import ConfigError, MuseError, one_line
from .points import MAX_COORD, Box
from .runs import SlideRun
from .slide_state import SlideState
from .tiles import TileRequestError

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).parent / "static"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


class BadRequest(ValueError):
    """A request the API cannot answer as asked (400)."""


def static_files() -> dict[str, Path]:
    """The page's files by URL name, fixed at start-up."""
    return {p.name: p for p in STATIC_DIR.iterdir() if p.is_file() and p.suffix in CONTENT_TYPES}


class ViewerApp:
    """The slides a server shows, by stem, and the answers to API requests."""

    def __init__(self, runs: list[SlideRun]) -> None:
        self.slides = {run.stem: SlideState(run) for run in runs}
        self.static = static_files()

    def state(self, stem: str) -> SlideState:
        if stem not in self.slides:
            raise KeyError(stem)
        return self.slides[stem]

    def slide_list(self) -> list[dict]:
        return [
            {"stem": s, "nuclei": int(st.run.manifest.get("nuclei", 0)), "image": st.run.slide_path is not None}
            for s, st in self.slides.items()
        ]

    def close(self) -> None:
        for state in self.slides.values():
            state.close()


def _floats(query: dict, *names: str) -> list[float]:
    try:
        values = [float(query[n][0]) for n in names]
    except (KeyError, ValueError) as exc:
        raise BadRequest(f"need numeric {', '.join(names)}") from exc
    if not all(np.isfinite(values)):
        raise BadRequest(f"{', '.join(names)} must be finite")
    return values


def _classes(query: dict, n: int) -> np.ndarray:
    if "classes" not in query:
        return np.arange(n)
    text = query["classes"][0]
    try:
        ids = [int(c) for c in text.split(",") if c != ""]
    except ValueError as exc:
        raise BadRequest("classes must be comma-separated class ids") from exc
    if any(not 0 <= c < n for c in ids):
        raise BadRequest(f"class ids must be in 0..{n - 1}")
    return np.asarray(sorted(set(ids)), np.int64)


class Handler(BaseHTTPRequestHandler):
    server_version = "muse-fast-view"
    app: ViewerApp  # set on the subclass made by make_server
    names: frozenset[str] = frozenset({"localhost", "127.0.0.1"})  # likewise: the host names it answers to

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        log.debug("%s " + format, self.address_string(), *args)

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        if not host_allowed(self.headers.get("Host"), self.names):
            return self._error(HTTPStatus.FORBIDDEN, "host refused: open the viewer by its address, as printed")
        raw = urlsplit(self.path)
        parts = [unquote(p) for p in raw.path.split("/")[1:]]
        if not raw.path.startswith("/") or any(p in (".", "..") or any(c in p for c in "/\\\0") for p in parts):
            return self._error(HTTPStatus.FORBIDDEN, "path refused")
        query = parse_qs(raw.query, keep_blank_values=True)
        try:
            self._route(parts, query)
        except KeyError:
            self._error(HTTPStatus.NOT_FOUND, "not found")
        except (BadRequest, TileRequestError) as exc:
            self._error(HTTPStatus.BAD_REQUEST, str(exc))
        except MuseError as exc:
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, str(exc))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the page moved on (a tile it no longer needs)
        except Exception as exc:  # noqa: BLE001 - e.g. a slide that fails to decode: one line, the server goes on
            log.warning("%s: %s", self.path[:200], one_line(exc))
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, one_line(exc))

    def _route(self, parts: list[str], query: dict) -> None:
        app = self.app
        if parts in ([""], ["index.html"]):
            return self._file(app.static["index.html"])
        if len(parts) == 2 and parts[0] == "static":
            return self._file(app.static[parts[1]])
        if parts[:1] != ["api"] or len(parts) < 2:
            raise KeyError(parts)
        kind, rest = parts[1], parts[2:]
        if kind == "slides" and not rest:
            return self._json(app.slide_list())
        if not rest:
            raise KeyError(kind)
        state = app.state(rest[0])
        if kind == "slide" and len(rest) == 1:
            return self._json(state.info())
        if kind == "tile" and len(rest) == 3:
            return self._tile(state, rest[1], rest[2])
        if kind == "points" and len(rest) == 1:
            box = Box(*_floats(query, "x0", "y0", "x1", "y1", "scale"))
            try:
                box.check()
            except ValueError as exc:
                raise BadRequest(str(exc)) from exc
            pts = state.points
            return self._send(HTTPStatus.OK, "application/octet-stream", pts.query(box, _classes(query, pts.n_classes)))
        if kind == "nucleus" and len(rest) == 1:
            return self._nucleus(state, query)
        if kind == "density" and len(rest) == 1:
            return self._density(state, query)
        if kind == "layer" and len(rest) == 2 and rest[1] == "tissue.png":
            path = state.run.output("tissue.png")
            if path is None or state.tissue_mask is None:  # none, or not a readable PNG
                raise KeyError(rest[1])
            return self._file(path)
        raise KeyError(kind)

    def _tile(self, state: SlideState, level: str, name: str) -> None:
        if state.zoom is None:
            raise KeyError("no slide image")
        if not name.endswith(".jpg") or name.count("_") != 1:
            raise BadRequest("tile name must be <col>_<row>.jpg")
        try:
            lv, (col, row) = int(level), (int(v) for v in name[:-4].split("_"))
        except ValueError as exc:
            raise BadRequest("tile level, column and row must be integers") from exc
        data = state.zoom.tile(lv, col, row)
        self._send(HTTPStatus.OK, "image/jpeg", data, cache=True)

    def _nucleus(self, state: SlideState, query: dict) -> None:
        x, y, r = _floats(query, "x", "y", "r")
        if not (0 < r <= 10_000 and abs(x) <= MAX_COORD and abs(y) <= MAX_COORD):  # also refuses NaN
            raise BadRequest(f"r must be in (0, 10000] and x, y within +-{MAX_COORD:g} level-0 pixels")
        pts = state.points
        row = pts.nearest(x, y, r, _classes(query, pts.n_classes))
        if row is None:
            return self._json(None)
        c = int(pts.class_id[row])
        return self._json(
            {
                "row": row,
                "x": round(float(pts.x[row]), 2),
                "y": round(float(pts.y[row]), 2),
                "class_id": c,
                "class_name": state.run.classes[c],
                "score": round(float(pts.score[row]), 4),
                "class_probability": round(float(pts.prob[row]), 4),
            }
        )

    def _density(self, state: SlideState, query: dict) -> None:
        grid = state.density()
        if grid is None:
            raise KeyError("no mpp")
        try:
            c = int(query["class"][0])
        except (KeyError, ValueError) as exc:
            raise BadRequest("need an integer class") from exc
        if not 0 <= c < grid.counts.shape[0]:
            raise BadRequest(f"class must be in 0..{grid.counts.shape[0] - 1}")
        values = grid.per_mm2()[c]
        self._json(
            {
                "class_id": c,
                "cell_px": grid.cell_px,
                "cell_mm2": grid.cell_mm2,
                "rows": values.shape[0],
                "cols": values.shape[1],
                "max": float(values.max()),
                "values": [round(float(v), 1) for v in values.ravel()],
            }
        )

    def _file(self, path: Path) -> None:
        self._send(HTTPStatus.OK, CONTENT_TYPES.get(path.suffix, "application/octet-stream"), path.read_bytes())

    def _json(self, payload) -> None:
        self._send(HTTPStatus.OK, "application/json", json.dumps(payload).encode())

    def _error(self, status: HTTPStatus, message: str) -> None:
        self._send(status, "application/json", json.dumps({"error": message}).encode())

    def _send(self, status: HTTPStatus, ctype: str, body: bytes, cache: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=3600" if cache else "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def make_server(app: ViewerApp, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """A threading server bound to ``host:port`` (0: any free port) answering for ``app``; a :class:`ConfigError`
    in one line when it cannot listen there (the port taken, an address not of this machine)."""
    if not host.strip():
        raise ConfigError("--host is empty; leave it out to listen on 127.0.0.1 (this machine only)")
    handler = type("ViewerHandler", (Handler,), {"app": app, "names": server_names(host)})
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server_class = type("ViewerServer", (ThreadingHTTPServer,), {"address_family": family})
    try:
        server = server_class((host, port), handler)
    except OSError as exc:  # EADDRINUSE, EACCES, EADDRNOTAVAIL, socket.gaierror for a name that does not resolve
        fix = {
            errno.EADDRINUSE: "pass another --port (0 picks a free one)",
            errno.EACCES: "ports below 1024 need privileges; pass --port 8765, or 0 for any free one",
        }.get(exc.errno, "pass an address of this machine to --host")
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; {fix}") from None
    server.daemon_threads = True
    return server


def server_names(host: str) -> frozenset[str]:
    """The host names a server on ``host`` answers to: ``localhost`` and ``host``; listening beyond loopback (to share
    on a network), also this machine's own names, as colleagues type them."""
    names = {"localhost", host.lower().strip("[]")}
    if not is_loopback(host):
        names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
    return frozenset(n.rstrip(".") for n in names if n)


def host_allowed(header: str | None, names: frozenset[str]) -> bool:
    """Whether a request's ``Host`` names this server: one of ``names`` (:func:`server_names`) or an IP address.

    Any other name is refused, so that a web page whose domain is made to resolve to this machine (DNS rebinding)
    cannot read the slides through the user's browser. A request without ``Host`` (HTTP/1.0) is let through."""
    if header is None:
        return True
    try:
        name = urlsplit(f"//{header}").hostname
    except ValueError:
        return False
    if not name:
        return False
    if name.rstrip(".") in names:
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(app: ViewerApp, host: str, port: int, ready: threading.Event | None = None) -> None:
    """Serve until Ctrl-C (or SIGTERM), then close the sockets and slides; prints the address once."""
    server = make_server(app, host, port)
    shown = socket.gethostname() if host in ("0.0.0.0", "::") else host  # a wildcard is no address to open
    url = f"http://{shown if ':' not in shown else f'[{shown}]'}:{server.server_address[1]}/"
    if not is_loopback(host):
        warning = f"muse-fast: warning: serving on {host}: the slides and nuclei are visible to the network"
        print(warning, file=sys.stderr)
    print(f"muse-fast: viewing {len(app.slides)} slide(s) at {url} (Ctrl-C stops)", file=sys.stderr, flush=True)
    if ready is not None:
        ready.set()
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        from ..runtime import interrupts

        interrupts.clear()  # the way to stop it: not an interrupted command
        print("muse-fast: viewer stopped", file=sys.stderr)
    finally:
        server.server_close()
        app.close()
