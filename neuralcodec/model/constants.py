"""Numbers shared by the trained network (torch) and the torch-free decoder.

They live here, away from the torch modules, so that decoding a file needs NumPy only. Each is
part of the file format: changing one changes what a `.vaez` file means.
"""
from __future__ import annotations

import math

BLOCK = 8               # pixels per latent position along each axis (y is at 1/8 resolution)
PAD_MULTIPLE = 32       # images are padded to this: y at 1/8, z at 1/32 of the image

SCALE_COUNT = 64        # the coder's table of log-spaced Gaussian scales
SCALE_MIN = 0.11
SCALE_MAX = 256.0
LOG_STEP = (math.log(SCALE_MAX) - math.log(SCALE_MIN)) / (SCALE_COUNT - 1)

LEVELS = 8              # trained quality anchors; quality 1..100 maps onto 0..LEVELS-1

COORDINATE_DIVISOR = 16     # the context sees the scale coordinate divided by this
CONTEXT_Q_LIMIT = 4096      # anchor symbols enter the context clipped to +-this


def level_from_quality(quality: float) -> float:
    """Quality 1..100 -> continuous level 0..LEVELS-1."""
    q = min(max(float(quality), 1.0), 100.0)
    return (q - 1.0) / 99.0 * (LEVELS - 1)
