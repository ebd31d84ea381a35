"""The numba CPU kernels: both launch paths (parallel, calling thread) against the reference, and one compile per
machine: a second fresh process loads every kernel from numba's disk cache.

For the cache, two subprocesses share an empty ``NUMBA_CACHE_DIR``. The first compiles (cache misses,
``numba:compile`` events); the second must find everything cached: hits, no misses, no compile event. Counted
through the dispatchers' stats and numba's event API, never through timings.
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

pytestmark = pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="numba is not installed")

SCRIPT = r"""
import json, sys
import torch
from muse_fast.kernels.peaks import find_peaks
from muse_fast.kernels.point_gather import gather_points
import muse_fast.kernels.peaks.cpu, muse_fast.kernels.point_gather.cpu
lazy = "numba" not in sys.modules  # importing the kernels (numba ones included) must not import numba
from numba.core import event
from muse_fast.kernels.peaks import cpu as peaks_cpu
from muse_fast.kernels.point_gather import cpu as gather_cpu
with event.install_recorder("numba:compile") as compiles:
    for parallel in (False, True):  # every kernel: the calling-thread ones, then the parallel ones
        peaks_cpu.PARALLEL_MIN_PIXELS = 0 if parallel else 1 << 62
        gather_cpu.PARALLEL_MIN_WORK = 0 if parallel else 1 << 62
        heat = torch.rand(3, 20, 24, generator=torch.Generator().manual_seed(0))
        peaks = find_peaks(heat, 0.5, 1, 64, impl="numba")
        xy = 4.0 * peaks.yx.flip(-1).float()
        for layout in (torch.contiguous_format, torch.channels_last):
            fmap = torch.randn(3, 5, 20, 24).to(memory_format=layout).requires_grad_(True)
            gather_points(fmap, xy, (80, 96), peaks.counts, impl="numba").sum().backward()
from muse_fast.kernels.peaks import cpu_jit as p
from muse_fast.kernels.point_gather import cpu_jit as g
stats = [d.stats for d in p.DISPATCHERS + g.DISPATCHERS]
print(json.dumps({
    "lazy": lazy,
    "compiled": sorted({ev.data["dispatcher"].py_func.__name__ for _, ev in compiles.buffer if ev.is_start}),
    "hits": sum(sum(s.cache_hits.values()) for s in stats),  # one per kernel launched: the helpers are inlined
    "misses": sum(sum(s.cache_misses.values()) for s in stats),
}))
"""

KERNELS = ("peaks", "peaks_serial", "corners", "forward", "forward_serial", "forward_nhwc", "forward_nhwc_serial")
KERNELS += ("backward", "backward_serial")


def _fresh_process(cache_dir) -> dict:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir)}
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_second_process_loads_every_kernel_from_the_cache(tmp_path):
    first = _fresh_process(tmp_path)
    assert first["lazy"], "importing the kernel packages imported numba"
    assert first["misses"] > 0 and set(first["compiled"]) >= set(KERNELS)
    second = _fresh_process(tmp_path)
    assert second["compiled"] == [], f"recompiled in a second process: {second['compiled']}"
    assert second["misses"] == 0 and second["hits"] >= len(KERNELS)


@pytest.mark.parametrize("path", ["parallel", "serial"])
def test_both_launch_paths_match_the_reference(monkeypatch, path):
    """The size thresholds only pick a launch path; each path gives the reference's results (forward and backward)."""
    from muse_fast.kernels.peaks import cpu as peaks_cpu
    from muse_fast.kernels.peaks import find_peaks
    from muse_fast.kernels.point_gather import cpu as gather_cpu
    from muse_fast.kernels.point_gather import gather_points

    small = path == "parallel"  # a threshold of 0 sends every size to the parallel kernels
    monkeypatch.setattr(peaks_cpu, "PARALLEL_MIN_PIXELS", 0 if small else 1 << 62)
    monkeypatch.setattr(gather_cpu, "PARALLEL_MIN_WORK", 0 if small else 1 << 62)
    g = torch.Generator().manual_seed(7)
    heat = torch.rand(5, 29, 31, generator=g)
    heat[:, ::4, ::3] = 0.8  # ties and plateaus
    heat[1] = 0.5  # a constant map
    for cap in (3, 4096):
        ref = find_peaks(heat, 0.45, 1, cap, 1, impl="reference")
        got = find_peaks(heat, 0.45, 1, cap, 1, impl="numba")
        assert got.counts.tolist() == ref.counts.tolist() and got.overflow.tolist() == ref.overflow.tolist()
        for i in range(len(heat)):
            n = int(ref.counts[i])
            assert torch.equal(got.yx[i, :n], ref.yx[i, :n]) and torch.equal(got.scores[i, :n], ref.scores[i, :n])
    xy = 4.0 * ref.yx.flip(-1).float() + torch.rand(ref.yx.shape, generator=g)
    counts = ref.counts.clamp(max=xy.shape[1])
    base = torch.randn(5, 7, 29, 31, generator=g)
    grad_out = torch.randn(5, xy.shape[1], 7, generator=g)
    for layout in (torch.contiguous_format, torch.channels_last):  # channels-last: what the network returns on CPU
        fmap = base.to(memory_format=layout).requires_grad_(True)
        out_ref = gather_points(fmap, xy, (116, 124), counts, impl="reference")
        out = gather_points(fmap, xy, (116, 124), counts, impl="numba")
        assert torch.allclose(out, out_ref, atol=1e-5)
        (g_ref,) = torch.autograd.grad(out_ref, fmap, grad_out)
        (g_got,) = torch.autograd.grad(out, fmap, grad_out)
        assert torch.allclose(g_got, g_ref, atol=1e-5)


def test_channels_last_gives_the_same_bits():
    """The channels-last forward sums the same products in the same order as the planar one."""
    from muse_fast.kernels.point_gather import gather_points

    g = torch.Generator().manual_seed(3)
    fmap = torch.randn(3, 64, 14, 14, generator=g)
    xy = torch.rand(3, 40, 2, generator=g) * 60 - 2
    counts = torch.tensor([40, 17, 0], dtype=torch.int32)
    planar = gather_points(fmap, xy, (56, 56), counts, impl="numba")
    nhwc = gather_points(fmap.to(memory_format=torch.channels_last), xy, (56, 56), counts, impl="numba")
    assert torch.equal(planar, nhwc)
