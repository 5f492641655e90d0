"""Channel slices: the latent's channels help predict each other's scales, decoding stays parallel.

A few of the 192 latent channels carry most of the bits (ordered by their average cost, the
first 8 hold about 30%, the first 64 about 92%). The channels are cut into slices (by default
8, 8, 16, 32 and 128 channels, most expensive first), and each half of the checkerboard is
coded slice after slice: once a slice is decoded, its symbols tell the next slices how busy
the same spot of the image is (Minnen & Singh 2020 code channel slices the same way; ELIC
makes them uneven). So every position of slice j >= 1 gets a correction of its scale
coordinate from the symbols of the earlier slices *at the same position* (a 1x1 layer: the
anchors see the earlier slices' anchors, the other half their other half), on top of the
hyperprior and the checkerboard context.

Only the scale is corrected, never the mean: a symbol ``q = round(y - mean)`` then does not
depend on the slices, so the encoder picks every symbol first (rate-aware rounding,
refinement) and works out the slices' tables afterwards, and old files, which have no slices,
keep their meaning.

Bit-exactness: the slices see only integers both sides hold (the earlier slices' symbols,
clipped, and the integer scale index) and are exported to the fixed point of the other
probability networks (`integer_slices.py`). Cost: about 860 multiply-accumulates per pixel
in float64 (22 ms of a 768x512 decode on two cores), plus one entropy-decoding call per slice.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .constants import COORDINATE_DIVISOR

DEFAULT_BOUNDS = (8, 16, 32, 64)   # where slices 1.. start, in the channel order


class ChannelSlices(nn.Module):
    """(symbols, scale index, anchor mask) -> scale-coordinate corrections (table steps).

    ``order``: the channels, most expensive first; ``bounds``: where slices 1.. start in that
    order. Inputs are in the latent's own channel order; the output is zero on slice 0. Each
    slice's last layer starts at zero, so an untrained module changes nothing.
    """

    def __init__(self, order, bounds=DEFAULT_BOUNDS, hidden: int = 64):
        super().__init__()
        order = torch.as_tensor(order, dtype=torch.long)
        m = len(order)
        bounds = [int(b) for b in bounds]
        if not (bounds and 0 < bounds[0] and all(a < b for a, b in zip(bounds, bounds[1:] + [m]))):
            raise ValueError(f"slice bounds {bounds} must increase within {m} channels")
        self.register_buffer("order", order)
        self.bounds = bounds
        self.parts = nn.ModuleList()
        for start, stop in zip(bounds, bounds[1:] + [m]):
            part = nn.ModuleDict({
                "anchors_in": nn.Conv2d(2 * start, hidden, 1),
                "others_in": nn.Conv2d(2 * start, hidden, 1),
                "mix": nn.Conv2d(hidden + stop - start, hidden, 1),
                "head": nn.Conv2d(hidden, stop - start, 1),
            })
            nn.init.zeros_(part["head"].weight)
            nn.init.zeros_(part["head"].bias)
            self.parts.append(part)

    def edges(self):
        """(start, stop) in the channel order of slices 0, 1, ..."""
        starts = [0] + self.bounds
        return list(zip(starts, starts[1:] + [len(self.order)]))

    def forward(self, symbols: torch.Tensor, index: torch.Tensor, anchors: torch.Tensor):
        q = symbols[:, self.order]
        t = index[:, self.order]
        corrections = [torch.zeros_like(t[:, :self.bounds[0]])]
        for (start, stop), part in zip(self.edges()[1:], self.parts):
            seen = torch.cat([q[:, :start], q[:, :start].abs()], 1)
            features = (F.relu(part["anchors_in"](seen)) * anchors
                        + F.relu(part["others_in"](seen)) * (1 - anchors))
            hidden = F.relu(part["mix"](torch.cat([features, t[:, start:stop] / COORDINATE_DIVISOR], 1)))
            corrections.append(part["head"](hidden))
        ordered = torch.cat(corrections, 1)
        out = torch.empty_like(ordered)
        out[:, self.order] = ordered
        return out
