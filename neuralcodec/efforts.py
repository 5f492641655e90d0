"""Encoder effort levels: how many refinement passes (`refine.py`) an encode may spend.

Kept apart from `refine.py` (which needs torch) so that the command line can show and check
the levels without importing torch. Effort never changes the file format or the decoder.
"""
from __future__ import annotations

from numbers import Integral

EFFORTS = (0, 1, 2, 3)
# rounds of refinement per level: one round is a synthesis forward+backward pass for each 2x2
# phase of latent positions that holds refinable symbols (two with the checkerboard context,
# whose second half lives on two phases; four without a context); 0 is rate-aware rounding
# alone. One round, the default, refines every refinable symbol once: on the held-out photos
# it gives most of the PSNR-side gain of two rounds (BD-rates against level 0: README,
# "Encoder effort"), and a 768x512 photo still encodes in under half a second on two cores.
ROUNDS = {0: 0, 1: 1, 2: 2, 3: 4}
DEFAULT_EFFORT = 1


def check_effort(effort) -> int:
    """``effort`` as an int in `EFFORTS` (NumPy integers too, never a bool), or ValueError."""
    if isinstance(effort, bool) or not isinstance(effort, Integral) or int(effort) not in EFFORTS:
        raise ValueError(f"effort must be one of {', '.join(map(str, EFFORTS))}, got {effort!r}")
    return int(effort)
