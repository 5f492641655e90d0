"""Synthetic latent-like symbol indexes shared by the coder tests."""
from __future__ import annotations

import numpy as np


def mixture_index(n: int, parts, rng: np.random.Generator, scales: np.ndarray) -> np.ndarray:
    """Scale-table index per symbol; ``parts`` = [(share, lowest scale, highest scale)]."""
    shares = np.array([p[0] for p in parts])
    which = rng.choice(len(parts), size=n, p=shares / shares.sum())
    index = np.empty(n, dtype=np.int64)
    for k, (_, low, high) in enumerate(parts):
        allowed = np.flatnonzero((scales >= low * 0.999) & (scales <= high * 1.001))
        index[which == k] = rng.choice(allowed, size=int((which == k).sum()))
    return index
