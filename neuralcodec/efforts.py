"""Encoder effort levels: how many refinement passes (`refine.py`) an encode may spend.

Kept apart from `refine.py` (which needs torch) so that the command line can show and check
the levels without importing torch. Effort never changes the file format or the decoder.
"""
from __future__ import annotations

from numbers import Integral

EFFORTS = (0, 1, 2, 3)
# synthesis forward+backward passes per level; 0 is rate-aware rounding alone. Two passes
# visit each of the two 2x2 phases that hold the context's second half once, the cheapest
# schedule that refines every refinable symbol, and the default: on the held-out photos it
# gives nearly all of what four passes give (BD-rate against level 0: see README, "Encoder
# effort"), and a 768x512 photo still encodes in under half a second on two cores.
ITERATIONS = {0: 0, 1: 2, 2: 4, 3: 8}
DEFAULT_EFFORT = 1


def check_effort(effort) -> int:
    """``effort`` as an int in `EFFORTS` (NumPy integers too, never a bool), or ValueError."""
    if isinstance(effort, bool) or not isinstance(effort, Integral) or int(effort) not in EFFORTS:
        raise ValueError(f"effort must be one of {', '.join(map(str, EFFORTS))}, got {effort!r}")
    return int(effort)
