"""Checkerboard context: half of the latents help predict the other half, decoding stays parallel.

The latent grid is split like a checkerboard (He et al. 2021): *anchors* (row + column even)
are coded first with the hyperprior alone; every other position then also sees its four
decoded anchor neighbours, whose symbols say how busy that spot of the image is and which way
the values lean. Both halves are decoded in one parallel step each, never position by position.

Bit-exactness: the context sees only integers that both sides have exactly (the anchors'
symbols q, and the integer scale coordinate of the hyperprior plus the quality's offset), and
runs in the same fixed-point arithmetic as the hyper-synthesis (`integer_context.py`), so the
refined scale index agrees on every machine. Its mean correction needs no such care (the mean
never enters the entropy coder) but comes out of the same integer network anyway.

Cost: a depthwise 3x3 over the anchors' symbols and their magnitudes, then two 1x1 layers,
evaluated only where they are needed.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .constants import COORDINATE_DIVISOR  # noqa: F401  (the scale coordinate enters divided by this)


def anchor_mask(height: int, width: int, device=None) -> torch.Tensor:
    """(1, 1, H, W) float: 1 at anchors (row + column even), 0 elsewhere."""
    rows = torch.arange(height, device=device)[:, None]
    cols = torch.arange(width, device=device)[None, :]
    return ((rows + cols) % 2 == 0).float()[None, None]


class CheckerboardContext(nn.Module):
    """(anchor symbols, scale coordinate) -> (mean correction, coordinate correction).

    ``q``: (N, M, H, W) symbols, zero at non-anchor positions; ``coordinate``: (N, M, H, W)
    scale coordinate including the quality offset, in table steps. Outputs are meant for the
    non-anchor positions only. The last layer starts at zero, so an untrained context changes
    nothing.
    """

    def __init__(self, latent_channels: int, hidden: int = 64):
        super().__init__()
        m = latent_channels
        self.latent_channels = m
        self.neighbours = nn.Conv2d(2 * m, 2 * m, 3, padding=1, groups=2 * m, bias=False)
        self.mix = nn.Conv2d(3 * m, hidden, 1)
        self.head = nn.Conv2d(hidden, 2 * m, 1)
        with torch.no_grad():   # start as the average of the four anchor neighbours
            cross = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]) / 4
            self.neighbours.weight.copy_(cross.expand(2 * m, 1, 3, 3))
            self.head.weight.zero_()
            self.head.bias.zero_()

    def forward(self, q: torch.Tensor, coordinate: torch.Tensor):
        features = self.neighbours(torch.cat([q, q.abs()], dim=1))
        hidden = F.relu(self.mix(torch.cat([features, coordinate / COORDINATE_DIVISOR], dim=1)))
        mean, scale = self.head(hidden).split(self.latent_channels, dim=1)
        return mean, scale
