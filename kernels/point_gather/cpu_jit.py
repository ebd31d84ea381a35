"""The njit functions behind ``cpu.py``, at module level so that ``cache=True`` takes: they compile once per
machine and every later process loads them from numba's cache. Imported only by ``cpu.py``, on first use, so
importing the package does not need numba.

``forward`` and ``backward`` run one ``(image, channel)`` plane per thread; ``forward_nhwc`` reads a channels-last
map (what the network returns on CPU) without a copy, one image per thread. Their ``_serial`` twins run the same
loops on the calling thread, for small problems (``cpu.py`` picks). The helpers live in this file too, so a
cached kernel can never inline a stale helper (numba invalidates the cache by the file's timestamp).
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True)
def corners(xy, counts, h, w, in_h, in_w, idx, wts):
    """Flat indices ``idx [B, K, 4]`` (-1 outside the map) and bilinear weights ``wts [B, K, 4]`` per point."""
    b, k = xy.shape[:2]
    for i in range(b):
        for p in range(counts[i]):
            fx = xy[i, p, 0] * (w - 1) / in_w
            fy = xy[i, p, 1] * (h - 1) / in_h
            x0, y0 = int(np.floor(fx)), int(np.floor(fy))
            ax, ay = fx - x0, fy - y0
            for j in range(4):
                yy, xx = y0 + j // 2, x0 + j % 2
                inside = 0 <= yy < h and 0 <= xx < w
                idx[i, p, j] = yy * w + xx if inside else -1
                wts[i, p, j] = (ay if j // 2 else 1.0 - ay) * (ax if j % 2 else 1.0 - ax)


@numba.njit(cache=True)
def _forward_plane(q, planes, idx, wts, counts, out):
    """Plane ``q = image * C + channel``: the bilinear sum of the four corners of every point."""
    c = planes.shape[1]
    i, ch = q // c, q % c
    for p in range(counts[i]):
        acc = 0.0
        for j in range(4):
            if idx[i, p, j] >= 0:
                acc += wts[i, p, j] * planes[i, ch, idx[i, p, j]]
        out[i, ch, p] = acc


@numba.njit(cache=True)
def _forward_point(i, p, pixels, idx, wts, out):
    """Point ``p`` of image ``i`` from a channels-last map ``pixels [B, H*W, C]``: the four corner rows, summed in
    the same order and precision as :func:`_forward_plane`, so both layouts give the same values bit for bit."""
    for ch in range(pixels.shape[2]):
        acc = 0.0
        for j in range(4):
            if idx[i, p, j] >= 0:
                acc += wts[i, p, j] * pixels[i, idx[i, p, j], ch]
        out[i, p, ch] = acc


@numba.njit(cache=True)
def _backward_plane(q, grad_out, idx, wts, counts, grad_planes):
    """Plane ``q``: scatter the output gradient of every point to its four corners."""
    c = grad_planes.shape[1]
    i, ch = q // c, q % c
    for p in range(counts[i]):
        g = grad_out[i, ch, p]
        for j in range(4):
            if idx[i, p, j] >= 0:
                grad_planes[i, ch, idx[i, p, j]] += g * wts[i, p, j]


@numba.njit(cache=True, parallel=True)
def forward(planes, idx, wts, counts, out):  # planes [B, C, H*W], out [B, C, K]
    for q in numba.prange(planes.shape[0] * planes.shape[1]):
        _forward_plane(q, planes, idx, wts, counts, out)


@numba.njit(cache=True)
def forward_serial(planes, idx, wts, counts, out):
    for q in range(planes.shape[0] * planes.shape[1]):
        _forward_plane(q, planes, idx, wts, counts, out)


@numba.njit(cache=True, parallel=True)
def forward_nhwc(pixels, idx, wts, counts, out):  # pixels [B, H*W, C], out [B, K, C]
    for i in numba.prange(pixels.shape[0]):
        for p in range(counts[i]):
            _forward_point(i, p, pixels, idx, wts, out)


@numba.njit(cache=True)
def forward_nhwc_serial(pixels, idx, wts, counts, out):
    for i in range(pixels.shape[0]):
        for p in range(counts[i]):
            _forward_point(i, p, pixels, idx, wts, out)


@numba.njit(cache=True, parallel=True)
def backward(grad_out, idx, wts, counts, grad_planes):  # grad_out [B, C, K], grad_planes [B, C, H*W]
    for q in numba.prange(grad_planes.shape[0] * grad_planes.shape[1]):  # one thread per plane: no atomics needed
        _backward_plane(q, grad_out, idx, wts, counts, grad_planes)


@numba.njit(cache=True)
def backward_serial(grad_out, idx, wts, counts, grad_planes):
    for q in range(grad_planes.shape[0] * grad_planes.shape[1]):
        _backward_plane(q, grad_out, idx, wts, counts, grad_planes)


DISPATCHERS = (
    corners,
    forward,
    forward_serial,
    forward_nhwc,
    forward_nhwc_serial,
    backward,
    backward_serial,
    _forward_plane,
    _forward_point,
    _backward_plane,
)
