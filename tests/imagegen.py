"""Synthetic test images, so tests never need ../shared."""
from __future__ import annotations

import numpy as np


def natural_image(height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """A smooth-plus-texture test image: gradients, a few edges and mild noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    planes = []
    for c in range(channels):
        base = 128 + 60 * np.sin(xx / (7 + 3 * c)) * np.cos(yy / (11 + c))
        base += 40 * (xx > width / (2 + c))
        base += rng.normal(0, 6, size=(height, width))
        planes.append(base)
    img = np.clip(np.stack(planes, axis=-1), 0, 255).round().astype(np.uint8)
    return img[:, :, 0] if channels == 1 else img
