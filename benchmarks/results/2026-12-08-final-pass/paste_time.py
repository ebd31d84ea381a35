"""Overlay markers of 56 batches of 593 random points (a thumbnail of 1024 x 1024; the mosaic's batches), native then numpy,
twice, seconds for all 56 batches: python paste_time.py (from a tree's root, PYTHONPATH=<tree>)."""
import numpy as np, time, sys
import muse_fast.output.overlay as ov
from muse_fast.output.overlay import Overlay
class FakeSlide:
    level_dimensions = [(5632, 5632)]
ov.read_thumbnail = lambda slide, scale: np.full((1024, 1024, 3), 230, np.uint8)
rng = np.random.default_rng(0)
batches = [(rng.uniform(0, 5632, (593, 2)), rng.integers(0, 3, 593)) for _ in range(56)]
for native in (True, False, True, False):
    o = Overlay(FakeSlide(), ("a", "b", "c"))
    t = time.perf_counter()
    for xy, lab in batches: o.add_points(xy, lab, native=native)
    print("native" if native else "numpy", round(time.perf_counter() - t, 4))
