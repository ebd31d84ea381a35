"""The viewer's HTTP API on a real infer run of the CMU slide: tiles, points, nuclei, density, layers, refusals."""

import http.client
import io
import json
import struct
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image
from scipy.spatial import cKDTree

from muse_fast.io.readers import open_slide
from muse_fast.view.points import MODE_BINS, MODE_POINTS, Box, PointTable

STEM = "CMU-1-Small-Region"


def get(url: str, path: str) -> tuple[int, bytes, str]:
    """A raw GET: the path goes on the wire exactly as given (no normalisation of ``..`` or ``%2e``)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.putrequest("GET", path, skip_host=False, skip_accept_encoding=True)
    conn.endheaders()
    reply = conn.getresponse()
    body = reply.read()
    conn.close()
    return reply.status, body, reply.getheader("Content-Type", "")


def get_json(url: str, path: str):
    status, body, _ = get(url, path)
    assert status == 200, (path, body)
    return json.loads(body)


def unpack(body: bytes) -> tuple[int, float, np.ndarray, np.ndarray]:
    mode, n, side = struct.unpack("<iif", body[:12])
    x = np.frombuffer(body, "<f4", n, 12)
    y = np.frombuffer(body, "<f4", n, 12 + 4 * n)
    c = np.frombuffer(body, np.uint8, n, 12 + 8 * n)
    assert len(body) == 12 + 9 * n
    return mode, side, np.stack([x, y], 1), c


def test_slide_list_and_info_come_from_the_manifest(viewer, cmu_run, cmu_svs):
    manifest = json.loads((cmu_run / f"{STEM}.manifest.json").read_text())
    assert get_json(viewer, "/api/slides") == [{"stem": STEM, "nuclei": manifest["nuclei"], "image": True}]
    info = get_json(viewer, f"/api/slide/{STEM}")
    assert (info["width"], info["height"]) == (2220, 2967) and info["top_level"] == 12  # 2^12 >= 2967
    assert [c["name"] for c in info["classes"]] == manifest["fingerprint"]["model"]["classes"]
    assert {c["name"]: c["count"] for c in info["classes"]} == manifest["per_class"]
    assert info["nuclei"] == manifest["nuclei"] and info["area_mm2"] == manifest["area_mm2"]
    for c in info["classes"]:
        assert c["per_mm2"] == pytest.approx(c["count"] / manifest["area_mm2"], abs=0.01)
    grid = info["tile_grid"]  # the tiles infer planned: those it ran, those it found blank, those it could not read
    planned = manifest["tiles"] + manifest["tiles_blank"] + len(manifest["unreadable_regions"])
    model = manifest["fingerprint"]["model"]
    assert len(grid["tiles"]) == planned and grid["side"] == pytest.approx(
        model["tile_size"] * model["mpp"] / info["mpp"]
    )
    xy = np.array(grid["tiles"])
    assert xy.min() >= 0 and (xy + grid["side"] <= np.array([2220, 2967]) + 1).all()
    assert info["tissue"] is True


def test_tiles_match_the_reader_at_every_zoom(viewer, cmu_svs):
    slide = open_slide(cmu_svs)
    full = slide.read_region(0, 0, 2220, 2967, 0).astype(np.float32)
    slide.close()
    for level, col, row, size in (
        (12, 0, 0, (256, 256)),
        (12, 8, 11, (2220 - 8 * 256, 2967 - 11 * 256)),
        (10, 2, 2, (555 - 512, 742 - 512)),  # 1/4 scale: read from the slide and shrunk
        (9, 1, 1, (278 - 256, 371 - 256)),  # 1/8 scale: cut from the thumbnail (CMU has no pyramid)
        (0, 0, 0, (1, 1)),
    ):
        status, body, ctype = get(viewer, f"/api/tile/{STEM}/{level}/{col}_{row}.jpg")
        assert status == 200 and ctype == "image/jpeg"
        tile = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"), np.float32)
        assert (tile.shape[1], tile.shape[0]) == size
        if level == 12:  # full resolution: the reader's pixels, up to JPEG loss
            ref = full[row * 256 : row * 256 + size[1], col * 256 : col * 256 + size[0]]
            assert np.abs(tile - ref).mean() < 4
        else:  # a shrunk view of the same region: the same mean colour
            ds = 2 ** (12 - level)
            ref = full[row * 256 * ds : (row * 256 + size[1]) * ds, col * 256 * ds : (col * 256 + size[0]) * ds]
            assert np.abs(tile.mean((0, 1), dtype=np.float64) - ref.mean((0, 1), dtype=np.float64)).max() < 3
    status, body, _ = get(viewer, f"/api/tile/{STEM}/9/0_0.jpg")  # 1/8 scale: the slide's mean colour survives
    tile = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"), np.float32)
    assert tile.shape[:2] == (256, 256)  # level 9 is 278 x 371 px: its first tile is whole
    assert np.abs(tile.mean((0, 1), dtype=np.float64) - full[:2048, :2048].mean((0, 1), dtype=np.float64)).max() < 2


@pytest.mark.parametrize(
    "path",
    [
        "/api/tile/{s}/13/0_0.jpg",  # beyond full resolution
        "/api/tile/{s}/-1/0_0.jpg",
        "/api/tile/{s}/12/9_0.jpg",  # 9 * 256 > 2220
        "/api/tile/{s}/12/0_12.jpg",
        "/api/tile/{s}/12/-1_0.jpg",
        "/api/tile/{s}/x/0_0.jpg",
        "/api/tile/{s}/12/0_0.png",
        "/api/tile/{s}/12/0_0_1.jpg",
        "/api/points/{s}?x0=0&y0=0&x1=10&scale=1",  # y1 missing
        "/api/points/{s}?x0=10&y0=0&x1=0&y1=10&scale=1",  # x1 < x0
        "/api/points/{s}?x0=0&y0=0&x1=10&y1=10&scale=0",
        "/api/points/{s}?x0=nan&y0=0&x1=10&y1=10&scale=1",
        "/api/points/{s}?x0=0&y0=0&x1=inf&y1=10&scale=1",
        "/api/points/{s}?x0=-1e308&y0=0&x1=1e308&y1=10&scale=1",  # finite, but the width overflows
        "/api/points/{s}?x0=a&y0=0&x1=10&y1=10&scale=1",
        "/api/points/{s}?x0=0&y0=0&x1=10&y1=10&scale=1&classes=3",  # 3 classes: ids 0..2
        "/api/points/{s}?x0=0&y0=0&x1=10&y1=10&scale=1&classes=a",
        "/api/nucleus/{s}?x=1&y=1&r=0",
        "/api/nucleus/{s}?x=1&y=1",
        "/api/nucleus/{s}?x=1e308&y=1&r=3",  # finite, but the distance overflows
        "/api/nucleus/{s}?x=nan&y=1&r=3",
        "/api/density/{s}?class=3",
        "/api/density/{s}",
    ],
)
def test_bad_requests_are_400(viewer, path):
    status, body, _ = get(viewer, path.format(s=STEM))
    assert status == 400 and "error" in json.loads(body)


@pytest.mark.parametrize(
    "path",
    [
        "/api/tile/nope/12/0_0.jpg",
        "/api/slide/nope",
        "/api/points/nope?x0=0&y0=0&x1=10&y1=10&scale=1",
        "/api/nope",
        "/static/nope.js",
        "/api/layer/{s}/overlay.png",  # only the listed layers
        "/api/layer/{s}/CMU-1-Small-Region.csv",
    ],
)
def test_unknown_things_are_404(viewer, path):
    assert get(viewer, path.format(s=STEM))[0] == 404


@pytest.mark.parametrize(
    "path",
    [
        "/static/../server.py",
        "/static/%2e%2e/server.py",
        "/static/%2E%2E%2Fserver.py",
        "/static/..%2fserver.py",
        "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/../../../../etc/passwd",
        "/static/..\\server.py",
        "/static/%5c..%5cserver.py",
        "/api/layer/{s}/..%2f{s}.csv",
        "/api/tile/{s}/12/..%2f..%2f..%2fetc%2fpasswd",
        "/api/tile/..%2F..%2Fetc%2Fpasswd/12/0_0.jpg",
        "/static/%252e%252e/server.py",  # double-encoded: stays a (missing) name
        "/etc/passwd",
        "//etc/passwd",
        "/static//etc/passwd",
        "/static/{out}/{s}.csv",  # an absolute path to a real file inside OUT_DIR
        "/api/layer/{s}/{out}/{s}.tissue.png",
        "http://127.0.0.1/etc/passwd",  # absolute-form request target
        "/static/%00index.html",
    ],
)
def test_paths_outside_the_page_and_run_are_refused(viewer, cmu_run, path):
    status, body, _ = get(viewer, path.format(s=STEM, out=str(cmu_run).lstrip("/")))
    assert status in (403, 404), path
    assert b"root:" not in body and b"import" not in body and b"class_id" not in body


def test_the_page_and_its_files_are_served(viewer):
    status, body, ctype = get(viewer, "/")
    assert status == 200 and ctype.startswith("text/html") and b"viewer.js" in body
    status, body, ctype = get(viewer, "/static/viewer.js")
    assert status == 200 and ctype == "text/javascript" and b"museView" in body
    assert b"http://" not in body and b"https://" not in body  # nothing fetched from the network


def test_points_in_a_box_are_exactly_the_csv_rows_there(viewer, cmu_nuclei):
    xy, cls = cmu_nuclei["xy"], cmu_nuclei["class_id"]
    status, body, _ = get(viewer, f"/api/points/{STEM}?x0=-10&y0=-10&x1=3000&y1=3000&scale=1")
    mode, _, got, got_cls = unpack(body)
    assert mode == MODE_POINTS and len(got) == len(xy) > 1000
    dist, match = cKDTree(got).query(xy)  # the server reads the Parquet (full precision), the CSV has 2 decimals
    assert dist.max() <= 0.01 and len(set(match)) == len(xy) and (got_cls[match] == cls).all()
    box = (500.0, 700.0, 1300.0, 1900.0)
    inside = (xy[:, 0] >= box[0]) & (xy[:, 0] < box[2]) & (xy[:, 1] >= box[1]) & (xy[:, 1] < box[3])
    for classes, wanted in (
        ("0,1,2", inside),
        ("1", inside & (cls == 1)),
        ("0,2", inside & (cls != 1)),
        ("", 0 * inside),
    ):
        query = f"x0={box[0]}&y0={box[1]}&x1={box[2]}&y1={box[3]}&scale=2&classes={classes}"
        _, _, got, got_cls = unpack(get(viewer, f"/api/points/{STEM}?{query}")[1])
        assert len(got) == int(np.sum(wanted)) and (
            len(got) == 0 or set(got_cls) <= {int(c) for c in classes.split(",")}
        )
    _, _, got, _ = unpack(get(viewer, f"/api/points/{STEM}?x0=5000&y0=5000&x1=6000&y1=6000&scale=1")[1])
    assert len(got) == 0  # off the slide


def test_aggregated_bins_keep_the_dominant_class(cmu_run, cmu_nuclei):
    table = PointTable.load(cmu_run / f"{STEM}.csv", 3)
    box = Box(0, 0, 2220, 2967, 20.0)
    mode, side, xy, cls = unpack(table.query(box, np.arange(3), max_points=100))
    assert mode == MODE_BINS and side == 60.0
    ref_xy, ref_cls = cmu_nuclei["xy"], cmu_nuclei["class_id"]
    cells = np.floor(ref_xy / side).astype(int)
    assert len(xy) == len({tuple(c) for c in cells})  # one bin per occupied cell
    for (bx, by), c in zip(xy[:50], cls[:50]):
        members = (cells[:, 0] == int(bx // side)) & (cells[:, 1] == int(by // side))
        counts = np.bincount(ref_cls[members], minlength=3)
        assert counts[c] == counts.max()
    assert table.query(box, np.arange(3), max_points=5000)[:4] == struct.pack("<i", MODE_POINTS)


def test_a_click_finds_the_nearest_nucleus_with_its_values(viewer, cmu_nuclei):
    xy = cmu_nuclei["xy"]
    for row in (0, 1000, len(xy) - 1):
        x, y = xy[row] + 1.0
        hit = get_json(viewer, f"/api/nucleus/{STEM}?x={x}&y={y}&r=3")
        assert hit["row"] == row and hit["class_name"] == cmu_nuclei["class_name"][row]
        assert hit["score"] == pytest.approx(cmu_nuclei["score"][row], abs=1e-4)
        assert hit["class_probability"] == pytest.approx(cmu_nuclei["prob"][row], abs=1e-4)
        other = [c for c in range(3) if c != cmu_nuclei["class_id"][row]]
        hidden = get_json(viewer, f"/api/nucleus/{STEM}?x={x}&y={y}&r=3&classes={other[0]},{other[1]}")
        assert hidden is None or hidden["row"] != row
    assert get_json(viewer, f"/api/nucleus/{STEM}?x=-500&y=-500&r=20") is None


def test_density_grid_counts_the_csv(viewer, cmu_nuclei):
    info = get_json(viewer, f"/api/slide/{STEM}")
    side = (0.1**0.5) * 1000 / info["mpp"]
    for k in range(3):
        d = get_json(viewer, f"/api/density/{STEM}?class={k}")
        assert d["cell_px"] == pytest.approx(side) and (d["rows"], d["cols"]) == (5, 4)
        ref = np.zeros((5, 4))
        for x, y in cmu_nuclei["xy"][cmu_nuclei["class_id"] == k]:
            ref[int(y // side), int(x // side)] += 1
        # per mm^2 of the slide inside each cell: the last row and column are cut by the slide's edge
        w0, h0 = info["width"], info["height"]
        cover = np.outer(np.clip(h0 - np.arange(5) * side, 0, side), np.clip(w0 - np.arange(4) * side, 0, side))
        expected = np.where(cover >= 0.1 * side**2, ref / (0.1 * cover / side**2), 0)
        np.testing.assert_allclose(np.array(d["values"]).reshape(5, 4), expected, rtol=1e-4, atol=0.06)


def test_tissue_layer_is_the_file_infer_wrote(viewer, cmu_run):
    status, body, ctype = get(viewer, f"/api/layer/{STEM}/tissue.png")
    assert status == 200 and ctype == "image/png"
    assert body == (cmu_run / f"{STEM}.tissue.png").read_bytes()


def test_a_failing_read_is_a_500_and_the_server_goes_on(viewer, monkeypatch):
    from muse_fast.view.tiles import DeepZoom

    def broken(self, level, col, row):
        raise RuntimeError("decoder error -2\nmore detail")

    monkeypatch.setattr(DeepZoom, "tile", broken)
    status, body, _ = get(viewer, f"/api/tile/{STEM}/12/0_0.jpg")
    assert status == 500 and json.loads(body) == {"error": "RuntimeError: decoder error -2"}
    monkeypatch.undo()
    assert get(viewer, f"/api/tile/{STEM}/12/0_0.jpg")[0] == 200
