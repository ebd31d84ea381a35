"""The viewer as a person sees it: headless Chromium loads the page on a real run of the CMU slide, and the nuclei
appear in their class colours where the CSV puts them."""

import io
import os
import re

import numpy as np
import pytest
from cdp import CHROMIUM_INSTALL, Browser, chromium_path
from PIL import Image
from scipy.spatial import cKDTree

WIDTH, HEIGHT = 1200, 800
READY = "document.body.dataset.nuclei === 'drawn' && document.body.dataset.tiles === 'loaded'"


@pytest.fixture(scope="module")
def browser():
    if chromium_path() is None:
        if os.environ.get("MUSE_REQUIRE_CHROMIUM"):  # CI installs it: there the test must run
            pytest.fail(f"MUSE_REQUIRE_CHROMIUM is set but chromium is not installed; install it: {CHROMIUM_INSTALL}")
        pytest.skip(f"chromium not installed; install it with: {CHROMIUM_INSTALL}")
    with Browser(WIDTH, HEIGHT) as b:
        yield b


def _screen(browser, nuclei):
    """Screenshot (RGB array) and the nuclei's screen positions in the current view."""
    v = browser.evaluate("museView.view()")
    stage = browser.evaluate(
        "[document.getElementById('stage').clientWidth, document.getElementById('stage').clientHeight]"
    )
    shot = np.asarray(Image.open(io.BytesIO(browser.screenshot())).convert("RGB")).astype(int)
    sx = np.round((nuclei["xy"][:, 0] - v["x0"]) / v["scale"]).astype(int)
    sy = np.round((nuclei["xy"][:, 1] - v["y0"]) / v["scale"]).astype(int)
    inside = (sx >= 0) & (sy >= 0) & (sx < stage[0]) & (sy < stage[1])
    return shot, sx, sy, inside


def _class_colours(browser) -> np.ndarray:
    return np.array(browser.evaluate("museView.state.info.classes.map((k) => k.colour)"))


def test_nuclei_are_drawn_in_their_class_colour_where_the_csv_puts_them(browser, viewer, cmu_nuclei):
    browser.goto(viewer + "/")
    browser.wait_for(READY)
    colours = _class_colours(browser)
    shot, sx, sy, inside = _screen(browser, cmu_nuclei)
    assert inside.all()  # the first view shows the whole slide
    at = shot[sy, sx]
    own = (np.abs(at - colours[cmu_nuclei["class_id"]]).max(1) <= 2).mean()
    assert own > 0.8, own  # a nucleus drawn over by a neighbour of another class shows that class instead
    for k in range(len(colours)):
        mine = cmu_nuclei["class_id"] == k
        assert (np.abs(at[mine] - colours[k]).max(1) <= 2).mean() > 0.5
    legend = browser.evaluate("document.getElementById('legend').innerText")
    for name in set(cmu_nuclei["class_name"]):
        count = int((cmu_nuclei["class_name"] == name).sum())
        assert name in legend and f"{count:,}" in legend

    # every class switched off: those pixels show the slide, which never has exactly a class colour
    browser.evaluate("document.querySelectorAll('#legend input').forEach((box) => box.click())")
    browser.wait_for(READY)
    shot, sx, sy, _ = _screen(browser, cmu_nuclei)
    any_class = (np.abs(shot[sy, sx][:, None, :] - colours[None]).max(2) <= 2).any(1)
    assert any_class.mean() < 0.05


def test_zoomed_in_nuclei_and_a_click_names_the_class(browser, viewer, cmu_nuclei):
    browser.goto(viewer + "/")
    browser.wait_for(READY)
    xy = cmu_nuclei["xy"]
    gaps = cKDTree(xy).query(xy, k=2)[0][:, 1]
    row = int(np.argmax(np.where((xy[:, 0] > 300) & (xy[:, 1] > 300), gaps, 0)))  # the most isolated nucleus
    browser.evaluate(f"museView.setView({xy[row, 0]}, {xy[row, 1]}, 0.5)")  # 2 screen px per slide px
    browser.wait_for(READY)
    assert browser.evaluate("museView.state.pts.mode") == 0
    shot, sx, sy, inside = _screen(browser, cmu_nuclei)
    colours = _class_colours(browser)
    cls = cmu_nuclei["class_id"][row]
    x, y = sx[row], sy[row]
    ring = shot[y - 16 : y + 17, x - 16 : x + 17].reshape(-1, 3)
    assert (np.abs(ring - colours[cls]).max(1) <= 2).sum() > 20  # its mark, a ring at this zoom
    browser.click(float(x), float(y))
    browser.wait_for("!document.getElementById('popup').hidden")
    text = browser.evaluate("document.getElementById('popup').textContent")
    assert text.startswith(cmu_nuclei["class_name"][row] + " ")
    assert float(re.search(r"score ([0-9.]+)", text)[1]) == pytest.approx(cmu_nuclei["score"][row], abs=1e-3)
