"""Post-filter: a small network that cleans up the decoded image, over 2x2 pixel groups.

Why: the synthesis works at 1/8 resolution and ends in a linear 3x3 convolution into
PixelShuffle(8), so every 8x8 block of pixels is a linear function of a few latent positions.
Whatever needs a non-linearity at pixel scale (block edges, ringing next to sharp edges) it
cannot do. Three small convolutions over the decoded pixels, at half resolution
(PixelUnshuffle(2): 12 channels per 2x2 pixel group), add the missing correction for about a
quarter of the synthesis' arithmetic; trained on frozen transforms it gains about 0.25 dB on
held-out crops and 0.35 to 0.42 dB on Kodak at low and middle rates (see MODEL.md).

It reads the decoded image *after* rounding to 8 bits, exactly what the decoder has, so it can
be trained on decoded crops alone and it never changes the latents or the file format's
bit-exactness rules; its output is rounded to 8 bits again. The quality level enters as a bias
of the first layer (``level_bias * level / (LEVELS - 1)``): stronger filtering where the
quantisation was coarse. The last layer starts at zero, so an untrained filter is the identity.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .constants import LEVELS


class PostFilter(nn.Module):
    """(N, 3, H, W) decoded RGB in [0, 1], H and W multiples of ``scale``; level (N,) ->
    filtered RGB (not clamped)."""

    def __init__(self, channels: int = 32, scale: int = 2):
        super().__init__()
        groups = 3 * scale * scale
        self.scale = scale
        self.first = nn.Conv2d(groups, channels, 3, padding=1)
        self.level_bias = nn.Parameter(torch.zeros(channels))
        self.middle = nn.Conv2d(channels, channels, 3, padding=1)
        self.last = nn.Conv2d(channels, groups, 3, padding=1)
        nn.init.zeros_(self.last.weight)
        nn.init.zeros_(self.last.bias)

    def forward(self, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        h = self.first(F.pixel_unshuffle(x - 0.5, self.scale))
        h = F.relu(h + self.level_bias[None, :, None, None] * (level / (LEVELS - 1))[:, None, None, None])
        h = F.relu(self.middle(h))
        return x + F.pixel_shuffle(self.last(h), self.scale)
