"""Splitting an axis into consecutive tile cores (shared by the torch tiling, the NumPy
synthesis tiles and the codec's row strips)."""
from __future__ import annotations


def tile_starts(length: int, core: int) -> list[tuple[int, int]]:
    """Split ``range(length)`` into consecutive ``(start, stop)`` cores of ``core`` positions."""
    return [(a, min(a + core, length)) for a in range(0, length, core)]
