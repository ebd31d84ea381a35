"""Load time and frame time of ``muse-fast view`` with a million synthetic nuclei in headless Chromium (not in CI).

    python benchmarks/view_page.py WORK_DIR [--nuclei 1000000] [--side 16384] [--json OUT.json]

Writes a pyramidal 0.5 um/px TIFF (one pink colour) of ``side`` x ``side`` px and, beside it, an output folder as
``infer`` leaves it (manifest + CSV) with ``nuclei`` uniformly placed nuclei of 3 classes; serves it on a free
loopback port and drives the page over the DevTools protocol (tests/view/cdp.py). Reports: the seconds from
navigation until the nuclei and the slide tiles of the first view are drawn (server start-up, CSV parse and first-
tile reads included), the page's own navigation-to-nuclei time, and the JavaScript time of a frame (slide tiles +
layers + nuclei, while panning) at the whole-slide view (aggregated bins) and zoomed in (every nucleus of the view
drawn).
"""

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "view"))

from cdp import Browser  # noqa: E402
from view_server import start_server  # noqa: E402

READY = "document.body.dataset.nuclei === 'drawn' && document.body.dataset.tiles === 'loaded'"
CLASSES = ["lymphocyte", "tumor", "stromal"]


def write_run(work: Path, n: int, side: int) -> Path:
    slide = work / "synthetic.tif"
    tile = np.full((256, 256, 3), (236, 200, 220), np.uint8)
    with tifffile.TiffWriter(slide) as tif:  # a pyramid (each level a page at half the size), as WSIs have
        level = side
        while level >= 256:
            tif.write(
                (tile for _ in range((level // 256) ** 2)),
                shape=(level, level, 3),
                dtype=np.uint8,
                tile=(256, 256),
                compression="zlib",
                photometric="rgb",
                resolution=(20000.0 * side / level, 20000.0 * side / level),
                resolutionunit="CENTIMETER",
                subfiletype=0 if level == side else 1,
            )
            level //= 2
    out = work / "out"
    out.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, side, (n, 2))
    cls = rng.choice(3, n, p=[0.2, 0.5, 0.3])
    table = out / "synthetic.csv"
    with open(table, "w") as fh:
        fh.write("x,y,class_id,class_name,score,class_probability\n")
        names = np.array(CLASSES)[cls]
        score, prob = rng.uniform(0.3, 1, n), rng.uniform(0.4, 1, n)
        fh.writelines(
            f"{x:.2f},{y:.2f},{c},{name},{s:.4f},{p:.4f}\n"
            for x, y, c, name, s, p in zip(xy[:, 0], xy[:, 1], cls, names, score, prob)
        )
    area = (side * 0.5 / 1000) ** 2
    manifest = {
        "slide": str(slide),
        "fingerprint": {
            "file": {"size": slide.stat().st_size},
            "model": {"classes": CLASSES, "mpp": 0.5, "tile_size": 224},
            "settings": {"overlap": 32},
        },
        "outputs": {table.name: table.stat().st_size},
        "nuclei": n,
        "per_class": {name: int((cls == k).sum()) for k, name in enumerate(CLASSES)},
        "area_mm2": area,
        "unreadable_regions": [],
        "format": 1,
    }
    (out / "synthetic.manifest.json").write_text(json.dumps(manifest))
    return out


def frame_stats(browser: Browser, frames: int) -> dict:
    times = np.array(browser.evaluate(f"museView.frames({frames})"))
    return {"mean_ms": round(float(times.mean()), 1), "p95_ms": round(float(np.percentile(times, 95)), 1)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("work", type=Path)
    parser.add_argument("--nuclei", type=int, default=1_000_000)
    parser.add_argument("--side", type=int, default=16384)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    out = write_run(args.work, args.nuclei, args.side)
    with Browser(1600, 1000) as browser:
        start = time.monotonic()
        server, app, url = start_server(out)
        try:
            browser.goto(url + "/")
            browser.wait_for(READY, timeout=300)
            load_s = time.monotonic() - start
            page_ms = float(browser.evaluate("document.body.dataset.loadMs"))
            whole = {"mode": browser.evaluate("museView.state.pts.mode"), **frame_stats(browser, args.frames)}
            whole["items"] = browser.evaluate("museView.state.pts.n")
            half = args.side / 2
            browser.evaluate(f"museView.setView({half}, {half}, 2)")  # 2 slide px per screen px
            browser.wait_for(READY, timeout=300)
            zoomed = {"mode": browser.evaluate("museView.state.pts.mode"), **frame_stats(browser, args.frames)}
            zoomed["items"] = browser.evaluate("museView.state.pts.n")
        finally:
            server.shutdown()
            server.server_close()
            app.close()
        version = subprocess.run(["chromium", "--version"], capture_output=True, text=True).stdout.strip()
    result = {
        "nuclei": args.nuclei,
        "slide_px": args.side,
        "load_s": round(load_s, 2),
        "page_navigation_to_nuclei_ms": round(page_ms),
        "frame_whole_slide": whole,
        "frame_zoomed": zoomed,
        "browser": version,
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
    }
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
