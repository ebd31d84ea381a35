"""Launch grids for the Triton kernels, within CUDA's limits: grid axis 0 takes up to 2**31 - 1 programs, axes 1
and 2 at most 65,535 each. The unbounded dimension (pixel or point blocks) goes on axis 0; the batch goes on axis 1,
split into chunks of at most 65,535 images. Plain Python (no triton import), so tests check it anywhere."""

from __future__ import annotations

MAX_GRID_AXIS0 = 2**31 - 1
MAX_GRID_AXIS12 = 65_535


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def batch_chunks(batch: int) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges of at most ``MAX_GRID_AXIS12`` images covering ``range(batch)``."""
    return [(s, min(s + MAX_GRID_AXIS12, batch)) for s in range(0, batch, MAX_GRID_AXIS12)]


def check_grid(grid: tuple[int, ...]) -> tuple[int, ...]:
    """``grid`` itself, or a ``ValueError`` naming the axis past CUDA's limit (never a launch that fails later)."""
    limits = (MAX_GRID_AXIS0, MAX_GRID_AXIS12, MAX_GRID_AXIS12)
    for axis, (size, limit) in enumerate(zip(grid, limits)):
        if size > limit:
            raise ValueError(f"launch grid {grid}: axis {axis} has {size} programs, CUDA allows {limit}")
    return grid


def peaks_grids(batch: int, pixels: int, block: int) -> list[tuple[int, int, tuple[int, int]]]:
    """Peaks kernel launches ``(start, stop, grid)``: pixel blocks on axis 0, images ``start:stop`` on axis 1."""
    return [(s, e, check_grid((cdiv(pixels, block), e - s))) for s, e in batch_chunks(batch)]


def gather_grids(
    batch: int, points: int, channels: int, block_k: int, block_c: int
) -> list[tuple[int, int, tuple[int, int, int]]]:
    """Gather kernel launches ``(start, stop, grid)``: point blocks on axis 0, images on 1, channel blocks on 2."""
    grid_c = cdiv(channels, block_c)
    return [(s, e, check_grid((cdiv(max(points, 1), block_k), e - s, grid_c))) for s, e in batch_chunks(batch)]
