"""Continuous quality from one set of weights: interpolated per-channel gain vectors.

Following the gain-unit idea of Cui et al. (2021), the encoder multiplies the latent by a
per-channel gain before rounding and the decoder divides by a separately learned inverse gain.
Training samples a continuous level ``t`` in ``[0, LEVELS-1]`` with a matching rate-distortion
trade-off ``lambda(t)``; gains and lambdas are interpolated log-linearly between anchor levels,
so every quality 1..100 is a trained operating point rather than a blend of two models.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .constants import LEVELS, level_from_quality  # noqa: E402,F401
LAMBDA_MIN = 0.0002     # weight of 255^2 * MSE against bits per pixel at the lowest level
LAMBDA_MAX = 0.12       # ... and at the highest level


def lambda_at(level: torch.Tensor) -> torch.Tensor:
    lo, hi = math.log(LAMBDA_MIN), math.log(LAMBDA_MAX)
    return torch.exp(lo + (hi - lo) * level / (LEVELS - 1))


def _interpolate(table: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """table (LEVELS, C), level (N,) -> (N, C, 1, 1) log-linear interpolation."""
    low = level.floor().clamp(0, LEVELS - 2).long()
    frac = (level - low.to(level.dtype)).unsqueeze(1)
    value = table[low] * (1 - frac) + table[low + 1] * frac
    return value[:, :, None, None]


class QualityGains(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        # Initial step sizes from the high-rate optimum of an orthonormal transform.
        steps = [math.sqrt(18.0 / (float(lambda_at(torch.tensor(float(l)))) * 65025 * math.log(2)))
                 for l in range(LEVELS)]
        log_gain = torch.tensor([[-math.log(0.9 * s)] * channels for s in steps])
        self.encoder_log_gain = nn.Parameter(log_gain.clone())
        self.decoder_log_gain = nn.Parameter(-log_gain.clone())

    def encoder_gain(self, level: torch.Tensor) -> torch.Tensor:
        return torch.exp(_interpolate(self.encoder_log_gain, level))

    def decoder_gain(self, level: torch.Tensor) -> torch.Tensor:
        return torch.exp(_interpolate(self.decoder_log_gain, level))
