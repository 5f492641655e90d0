"""Splitting an axis into consecutive tile cores, with or without a halo around each (shared
by the torch tiling, the NumPy synthesis tiles, the integer networks' strips and the codec)."""
from __future__ import annotations


def tile_starts(length: int, core: int) -> list[tuple[int, int]]:
    """Split ``range(length)`` into consecutive ``(start, stop)`` cores of ``core`` positions."""
    return [(a, min(a + core, length)) for a in range(0, length, core)]


def halo_windows(length: int, core: int, halo: int) -> list[tuple[slice, slice]]:
    """``(window, core)`` slices over ``range(length)``: consecutive cores of ``core``
    positions (all of it when ``core`` is 0), each window the core widened by ``halo`` on
    both sides and clipped to the axis."""
    return [(slice(max(a - halo, 0), min(b + halo, length)), slice(a, b))
            for a, b in tile_starts(length, core or length or 1)]


def halo_tiles(size: tuple[int, int], core: int, halo: int):
    """`halo_windows` in two dimensions: ``(rows, cols, keep_rows, keep_cols)`` slices for
    square tiles of ``core`` positions over a ``size`` (rows, columns) grid: each tile's input
    window (core plus halo, clipped) and its core."""
    for rows, keep_rows in halo_windows(size[0], core, halo):
        for cols, keep_cols in halo_windows(size[1], core, halo):
            yield rows, cols, keep_rows, keep_cols
