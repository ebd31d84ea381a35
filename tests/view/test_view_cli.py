"""``muse-fast view``: what it refuses in one line, where it listens, how it stops, and what infer writes for it."""

import json
import shutil
import socket
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest
from PIL import Image
from view_server import start_server

from muse_fast.cli import main
from muse_fast.errors import InputError
from muse_fast.io.readers import open_slide
from muse_fast.post.classes import class_colour
from muse_fast.view import server as server_module
from muse_fast.view.points import PointTable
from muse_fast.view.runs import find_runs
from muse_fast.view.server import ViewerApp, is_loopback, serve

STEM = "CMU-1-Small-Region"


def test_a_folder_without_a_finished_run_is_one_line(tmp_path, capsys):
    assert main(["view", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no finished run" in err and "muse-fast infer" in err
    assert main(["view", str(tmp_path / "missing")]) == 2
    assert "output folder not found" in capsys.readouterr().err
    assert main(["view", str(tmp_path), "--port", "70000"]) == 2


def test_a_manifest_whose_table_is_gone_is_named(cmu_run, tmp_path):
    copy = tmp_path / "out"
    copy.mkdir()
    shutil.copy(cmu_run / f"{STEM}.manifest.json", copy)
    with pytest.raises(InputError, match=f"incomplete manifests: {STEM}"):
        find_runs(copy)


def test_a_moved_slide_is_found_in_the_folder_given(cmu_run, cmu_svs, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(cmu_run, out)
    manifest = json.loads((out / f"{STEM}.manifest.json").read_text())
    manifest["slide"] = str(tmp_path / "gone" / cmu_svs.name)
    (out / f"{STEM}.manifest.json").write_text(json.dumps(manifest))
    assert find_runs(out)[0].slide_path is None  # shown without the image
    assert find_runs(out, cmu_svs.parent)[0].slide_path == cmu_svs.resolve()
    assert find_runs(out, cmu_svs)[0].slide_path == cmu_svs.resolve()
    with pytest.raises(InputError, match="slide not found"):
        find_runs(out, tmp_path / "nope.svs")


def test_several_slides_are_listed_and_odd_names_are_served(cmu_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(cmu_run, out)
    second = "second..run #1%"  # '..' inside a name is not a path segment
    for suffix in ("csv", "parquet", "tissue.png", "manifest.json"):
        shutil.copy(out / f"{STEM}.{suffix}", out / f"{second}.{suffix}")
    manifest = json.loads((out / f"{second}.manifest.json").read_text())
    manifest["outputs"] = {k.replace(STEM, second): v for k, v in manifest["outputs"].items()}
    (out / f"{second}.manifest.json").write_text(json.dumps(manifest))
    server, app, url = start_server(out)
    try:
        assert [s["stem"] for s in app.slide_list()] == [STEM, second]
        with urllib.request.urlopen(f"{url}/api/slide/{urllib.parse.quote(second)}") as reply:
            assert json.loads(reply.read())["stem"] == second
    finally:
        server.shutdown()
        server.server_close()
        app.close()


def test_ctrl_c_stops_cleanly_and_other_hosts_are_warned_about(cmu_run, monkeypatch, capsys):
    def interrupted(self, poll_interval=0.5):
        raise KeyboardInterrupt

    monkeypatch.setattr(server_module.ThreadingHTTPServer, "serve_forever", interrupted)
    made = []
    real = server_module.make_server
    monkeypatch.setattr(server_module, "make_server", lambda *a: made.append(real(*a)) or made[-1])
    serve(ViewerApp(find_runs(cmu_run)), "127.0.0.1", 0)
    err = capsys.readouterr().err
    assert "http://127.0.0.1:" in err and "viewer stopped" in err and "warning" not in err
    assert made[0].socket.fileno() == -1  # the listening socket is closed
    serve(ViewerApp(find_runs(cmu_run)), "0.0.0.0", 0)
    assert "visible to the network" in capsys.readouterr().err
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")


def test_the_server_binds_loopback_by_default(cmu_run):
    server, app, url = start_server(cmu_run)
    try:
        assert server.server_address[0] == "127.0.0.1"
        with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=5):
            pass
    finally:
        server.shutdown()
        server.server_close()
        app.close()


def test_infer_writes_the_density_image(cmu_run, cmu_svs, cmu_nuclei):
    image = np.asarray(Image.open(cmu_run / f"{STEM}.density.png").convert("RGB"))
    manifest = json.loads((cmu_run / f"{STEM}.manifest.json").read_text())
    assert f"{STEM}.density.png" in manifest["outputs"]
    # three class panels side by side, each the 4 x 5 grid of 0.1 mm^2 cells scaled to at most 256 px, a label row
    # above and a caption row below
    panel_w, panel_h = 4 * (256 // 5), 5 * (256 // 5)
    assert image.shape == (panel_h + 28, max(3 * (max(panel_w, 120) + 4), 420), 3)
    slide = open_slide(cmu_svs)
    side, w0 = (0.1**0.5) * 1000 / slide.mpp, slide.level_dimensions[0][0]
    tissue = np.asarray(Image.open(cmu_run / f"{STEM}.tissue.png")) > 0
    down = w0 / tissue.shape[1]
    peaks = []
    for k, name in enumerate(manifest["fingerprint"]["model"]["classes"]):
        cells = np.zeros((5, 4))
        for x, y in cmu_nuclei["xy"][cmu_nuclei["class_id"] == k]:
            cells[int(y // side), int(x // side)] += 1
        for r, c in np.ndindex(cells.shape):  # per mm^2 of the slide's tissue inside the cell
            box = tissue[
                int(r * side / down) : int((r + 1) * side / down), int(c * side / down) : int((c + 1) * side / down)
            ]
            area = box.size * down**2 * slide.mpp**2 / 1e6 * box.mean() if box.size else 0
            cells[r, c] = cells[r, c] / area if area > 0.01 else 0
        r, c = np.unravel_index(np.argmax(cells), cells.shape)
        peaks.append((cells[r, c], k, name, r, c))
    _, k, name, r, c = max(peaks)  # one colour scale: the densest cell of any class has its full class colour
    left = k * (max(panel_w, 120) + 4)
    densest = image[14 + r * 51 + 25, left + c * 51 + 25]
    assert tuple(densest) == class_colour(name, k)


def test_a_cell_cut_by_the_slide_edge_or_half_glass_reads_the_density_of_its_tissue():
    """A half-covered cell with half the nuclei has the density of a full cell, not half of it."""
    from muse_fast.io.tissue import TissueMask
    from muse_fast.output.density import DensityGrid, cell_side_px

    side = cell_side_px(0.5)
    grid = DensityGrid.empty(int(side * 1.5), int(side), 1, 0.5)  # the second column is half outside the slide
    grid.add(np.array([[side * 0.25, 10.0]] * 20 + [[side * 1.25, 10.0]] * 10), np.zeros(30, np.int64))
    full, half = grid.per_mm2()[0, 0]
    assert full == pytest.approx(20 / 0.1, rel=0.01) and half == pytest.approx(full, rel=0.01)  # int() px
    mask = TissueMask(np.array([[True, False, False]]).repeat(2, 0), downsample=side / 2)  # tissue: left half of cell 0
    grid.restrict_to(mask)
    assert grid.per_mm2()[0, 0, 0] == pytest.approx(20 / 0.05, rel=0.01) and not grid.valid()[0, 1]
    assert grid.per_mm2()[0, 0, 1] == 0  # no tissue: no density


def test_the_csv_is_read_when_there_is_no_parquet(cmu_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(cmu_run, out)
    (out / f"{STEM}.parquet").unlink()
    manifest = json.loads((out / f"{STEM}.manifest.json").read_text())
    del manifest["outputs"][f"{STEM}.parquet"]
    (out / f"{STEM}.manifest.json").write_text(json.dumps(manifest))
    run = find_runs(out)[0]
    assert run.table.name == f"{STEM}.csv"
    csv_table = PointTable.load(run.table, 3)
    parquet_table = PointTable.load(cmu_run / f"{STEM}.parquet", 3)
    assert len(csv_table) == len(parquet_table) == manifest["nuclei"]
    np.testing.assert_allclose(csv_table.x, parquet_table.x, atol=0.006)  # the CSV has 2 decimals
    assert (csv_table.class_id == parquet_table.class_id).all()
    np.testing.assert_allclose(csv_table.score, parquet_table.score, atol=6e-5)


def _copy_run(cmu_run, out, edit=None):
    """A copy of the CMU run in ``out``, its manifest changed by ``edit`` (a function of the dict)."""
    shutil.copytree(cmu_run, out)
    path = out / f"{STEM}.manifest.json"
    manifest = json.loads(path.read_text())
    if edit is not None:
        edit(manifest)
    path.write_text(json.dumps(manifest))
    return out


def test_a_link_in_the_run_folder_is_never_followed(cmu_run, tmp_path):
    """A tissue PNG or a table replaced by a link to a file elsewhere was served (the viewer followed it)."""
    out = _copy_run(cmu_run, tmp_path / "out")
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET")
    (out / f"{STEM}.tissue.png").unlink()
    (out / f"{STEM}.tissue.png").symlink_to(secret)
    server, app, url = start_server(out)
    try:
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{url}/api/layer/{STEM}/tissue.png")
        assert err.value.code == 404
        with urllib.request.urlopen(f"{url}/api/slide/{STEM}") as reply:
            assert json.loads(reply.read())["tissue"] is False
    finally:
        server.shutdown()
        server.server_close()
        app.close()
    manifest = out / f"{STEM}.manifest.json"  # a manifest that is a link: not read
    manifest.rename(tmp_path / "real.manifest.json")
    manifest.symlink_to(tmp_path / "real.manifest.json")
    with pytest.raises(InputError, match="no finished run"):
        find_runs(out)
    manifest.unlink()
    (tmp_path / "real.manifest.json").rename(manifest)
    for table in ("parquet", "csv"):  # both tables links: the run is not shown at all
        (out / f"{STEM}.{table}").rename(tmp_path / f"real.{table}")
        (out / f"{STEM}.{table}").symlink_to(tmp_path / f"real.{table}")
    with pytest.raises(InputError, match="no finished run"):
        find_runs(out)


def test_requests_under_another_host_name_are_refused(cmu_run):
    """DNS rebinding: a page whose domain resolves to 127.0.0.1 must not read the slides through the browser."""
    server, app, url = start_server(cmu_run)
    port = server.server_address[1]
    try:
        for host, status in [
            (f"attacker.example:{port}", 403),
            ("attacker.example", 403),
            (f"localhost:{port}", 200),
            (f"127.0.0.1:{port}", 200),
            (f"[::1]:{port}", 200),
        ]:
            request = urllib.request.Request(f"{url}/api/slides", headers={"Host": host})
            try:
                with urllib.request.urlopen(request) as reply:
                    got = reply.status
            except urllib.error.HTTPError as exc:
                got = exc.code
            assert got == status, host
    finally:
        server.shutdown()
        server.server_close()
        app.close()
    from muse_fast.view.server import host_allowed, server_names

    here = server_names("127.0.0.1")
    assert host_allowed("localhost.:1", here) and host_allowed("LOCALHOST", here) and host_allowed("[::1]:2", here)
    assert host_allowed(None, here) and not host_allowed("", here) and not host_allowed("[", here)
    assert not host_allowed(f"{socket.gethostname()}:8765", here)  # loopback only: not by the machine's name
    shared = server_names("0.0.0.0")  # shared on a network: colleagues open it by the machine's name
    assert host_allowed(f"{socket.gethostname()}:8765", shared) and host_allowed(f"{socket.getfqdn()}.", shared)
    assert not host_allowed("attacker.example:8765", shared)
    assert host_allowed("myhost.lab:8765", server_names("myhost.lab"))


@pytest.mark.parametrize(
    "edit, why",
    [
        (lambda m: m["fingerprint"]["model"].pop("classes"), "no list of class names"),
        (lambda m: m.__setitem__("fingerprint", []), "no model in its fingerprint"),
        (lambda m: m.__setitem__("nuclei", "many"), "nuclei count"),
        (lambda m: m.__setitem__("per_class", [1, 2]), "per_class"),
        (lambda m: m.__setitem__("area_mm2", "x"), "area"),
        (lambda m: m["fingerprint"]["model"].__setitem__("classes", [{"a": 1}]), "class names"),
        (lambda m: m["fingerprint"].__setitem__("mpp_override", -0.5), "mpp_override"),
        (lambda m: m["fingerprint"].__setitem__("mpp_override", "0.5"), "mpp_override"),
        (lambda m: m["fingerprint"]["settings"].__setitem__("overlap", 500), "overlap"),
        (lambda m: m["fingerprint"]["model"].__setitem__("classes", [f"c{i}" for i in range(300)]), "at most 255"),
    ],
)
def test_a_damaged_manifest_is_skipped_with_a_warning_and_good_runs_still_show(cmu_run, tmp_path, caplog, edit, why):
    """One bad manifest made /api/slides a 500 for every slide in the folder, or the viewer fail to start."""
    out = _copy_run(cmu_run, tmp_path / "out", edit)
    with pytest.raises(InputError, match="no finished run"):
        find_runs(out)
    assert why in caplog.text and STEM in caplog.text
    good = "good"
    for suffix in ("csv", "parquet", "tissue.png", "manifest.json"):
        shutil.copy(cmu_run / f"{STEM}.{suffix}", out / f"{good}.{suffix}")
    manifest = json.loads((out / f"{good}.manifest.json").read_text())
    manifest["outputs"] = {k.replace(STEM, good): v for k, v in manifest["outputs"].items()}
    (out / f"{good}.manifest.json").write_text(json.dumps(manifest))
    assert [r.stem for r in find_runs(out)] == [good]


def test_a_damaged_tissue_mask_turns_the_layer_off(cmu_run, tmp_path, caplog):
    out = _copy_run(cmu_run, tmp_path / "out")
    (out / f"{STEM}.tissue.png").write_bytes(b"not a png")
    server, app, url = start_server(out)
    try:
        with urllib.request.urlopen(f"{url}/api/slide/{STEM}") as reply:
            info = json.loads(reply.read())
        assert info["tissue"] is False and info["tile_grid"]["tiles"]  # the whole grid, unmasked
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{url}/api/layer/{STEM}/tissue.png")
        assert err.value.code == 404
        assert "tissue mask cannot be read" in caplog.text
    finally:
        server.shutdown()
        server.server_close()
        app.close()


def test_a_taken_port_an_address_not_here_and_empty_values_are_one_line(cmu_run, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["view", str(cmu_run), "--port", str(port)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "another --port" in err
    assert main(["view", str(cmu_run), "--host", "no.such.host.invalid", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--host" in err
    assert main(["view", str(cmu_run), "--host", "", "--port", "0"]) == 2
    assert "--host is empty" in capsys.readouterr().err
    assert main(["view", ""]) == 2
    assert "output folder is empty" in capsys.readouterr().err


def test_a_damaged_parquet_falls_back_to_the_csv_and_fractional_class_ids_are_refused(cmu_run, tmp_path, caplog):
    out = _copy_run(cmu_run, tmp_path / "out")
    (out / f"{STEM}.parquet").write_bytes(b"PAR1 cut short")
    run = find_runs(out)[0]
    from muse_fast.view.slide_state import SlideState

    points = SlideState(run).points
    assert len(points) == json.loads((out / f"{STEM}.manifest.json").read_text())["nuclei"]
    assert f"reading {STEM}.csv instead" in caplog.text
    csv_path = out / f"{STEM}.csv"
    lines = csv_path.read_text().splitlines()
    header = lines[0].split(",")
    row = lines[1].split(",")
    row[header.index("class_id")] = "1.7"
    csv_path.write_text("\n".join([lines[0], ",".join(row), *lines[2:]]) + "\n")
    with pytest.raises(InputError, match="not whole numbers"):
        PointTable.load(csv_path, 3)


def test_an_mpp_no_run_could_have_gives_no_grid_and_no_density_instead_of_gigabytes(cmu_run, tmp_path):
    """mpp_override 1000 in a manifest made info() and the density layer allocate gigabytes (a 500 or MemoryError)."""
    out = _copy_run(cmu_run, tmp_path / "out", lambda m: m["fingerprint"].__setitem__("mpp_override", 1000.0))
    server, app, url = start_server(out)
    try:
        with urllib.request.urlopen(f"{url}/api/slide/{STEM}") as reply:
            info = json.loads(reply.read())
        assert info["mpp"] == 1000.0 and info["tile_grid"] is None
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{url}/api/density/{STEM}?class=0")
        assert err.value.code == 404
    finally:
        server.shutdown()
        server.server_close()
        app.close()


def test_the_viewer_draws_each_class_in_the_colour_of_the_run(cmu_run, tmp_path):
    """The manifest records the colours the run drew (a user's QuPath colours, for adapted weights); the viewer uses
    them, and the defaults for a manifest without them or with colours it cannot use."""
    geojson = json.loads((cmu_run / f"{STEM}.geojson").read_text())
    drawn = {
        f["properties"]["classification"]["name"]: f["properties"]["classification"]["color"]
        for f in geojson["features"]
    }
    run = find_runs(cmu_run)[0]
    assert [drawn[n] for n in run.classes if n in drawn] == [
        list(c) for n, c in zip(run.classes, run.colours()) if n in drawn
    ]
    out = tmp_path / "run"
    shutil.copytree(cmu_run, out)
    manifest_file = out / f"{STEM}.manifest.json"
    manifest = json.loads(manifest_file.read_text())
    n = len(manifest["fingerprint"]["model"]["classes"])
    for given, expected in (
        ([[1, 2, 3 + k] for k in range(n)], [(1, 2, 3 + k) for k in range(n)]),  # a user's colours
        (None, [class_colour(c, k) for k, c in enumerate(run.classes)]),  # an older manifest
        ([[1, 2, 300]] * n, [class_colour(c, k) for k, c in enumerate(run.classes)]),  # not colours
    ):
        manifest.pop("class_colours", None)
        if given is not None:
            manifest["class_colours"] = given
        manifest_file.write_text(json.dumps(manifest))
        assert find_runs(out)[0].colours() == expected
