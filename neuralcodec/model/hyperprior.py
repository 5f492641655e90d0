"""The hyperprior: side information z that tells the entropy coder how every latent is spread.

* `HyperAnalysis` (h_a) summarises y into z at 1/4 of y's resolution.
* `FactorizedPrior` is the learned per-channel density of z (Balle et al. 2018, appendix 6.1).
* `HyperSynthesis` (h_s) predicts, for every element of y, a mean and a *scale coordinate*
  ``t``: the scale is ``SCALES[0] * exp(t * LOG_STEP)``, so rounding ``t`` gives the index into
  the fixed table of 64 log-spaced scales used by the coder.

Why the scale is an index: the decoder must reproduce the encoder's probabilities bit for bit.
After training, `HyperSynthesis` is exported to integer weights and runs in exact integer
arithmetic (see `integer_hyper.py`), so the scale index agrees on every machine.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .constants import LOG_STEP, SCALE_COUNT, SCALE_MAX, SCALE_MIN  # noqa: F401


def scale_from_coordinate(t: torch.Tensor) -> torch.Tensor:
    """Continuous scale for the scale coordinate ``t`` (clamped to the table's range)."""
    return SCALE_MIN * torch.exp(t.clamp(0.0, SCALE_COUNT - 1) * LOG_STEP)


class HyperAnalysis(nn.Module):
    def __init__(self, latent_channels: int, hyper_channels: int, width: int = 128):
        super().__init__()
        # per-channel input normalisation (latent channels differ in spread by 1000x)
        self.input_scale = nn.Parameter(torch.ones(latent_channels))
        self.net = nn.Sequential(
            nn.Conv2d(latent_channels, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 5, stride=2, padding=2), nn.ReLU(),
            nn.Conv2d(width, hyper_channels, 5, stride=2, padding=2),
        )

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.net(y * self.input_scale[None, :, None, None])


class HyperSynthesis(nn.Module):
    """z (N, Cz, h, w) -> mean and scale coordinate, each (N, M, 4h, 4w), gain-free.

    The coordinate is in scale-table steps relative to SCALE_MIN *before* the quality gain;
    the codec adds the gain's (integer) offset.

    Only convolutions, ReLU and PixelShuffle, so the integer export is exact.
    """

    def __init__(self, latent_channels: int, hyper_channels: int):
        super().__init__()
        self.latent_channels = latent_channels
        self.convs = nn.ModuleList([
            nn.Conv2d(hyper_channels, 128, 3, padding=1),
            nn.Conv2d(128, 4 * 96, 3, padding=1),      # -> PixelShuffle(2): 96 @ 2x
            nn.Conv2d(96, 4 * 64, 3, padding=1),       # -> PixelShuffle(2): 64 @ 4x
            nn.Conv2d(64, 2 * latent_channels, 1),     # mean, scale coordinate
        ])
        self.shuffle_after = (False, True, True, False)

    def forward(self, z_hat: torch.Tensor):
        x = z_hat
        last = len(self.convs) - 1
        for i, (conv, shuffle) in enumerate(zip(self.convs, self.shuffle_after)):
            x = conv(x)
            if shuffle:
                x = F.pixel_shuffle(x, 2)
            if i < last:
                x = F.relu(x)
        mean, coordinate = x.split(self.latent_channels, dim=1)
        return mean, coordinate


class FactorizedPrior(nn.Module):
    """Per-channel learned cumulative distribution c(x) for the hyper-latent z."""

    def __init__(self, channels: int, filters=(3, 3, 3), init_scale: float = 0.5):
        super().__init__()
        dims = (1,) + tuple(filters) + (1,)
        scale = init_scale ** (1 / (len(filters) + 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(filters) + 1):
            init = math.log(math.expm1(1 / scale / dims[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, dims[i + 1], dims[i]), init)))
            self.biases.append(nn.Parameter(torch.rand(channels, dims[i + 1], 1) - 0.5))
            if i < len(filters):
                self.factors.append(nn.Parameter(torch.zeros(channels, dims[i + 1], 1)))

    def logits_cdf(self, x: torch.Tensor) -> torch.Tensor:
        """x: (C, 1, K) values -> (C, 1, K) logits of the cumulative distribution."""
        for i, (matrix, bias) in enumerate(zip(self.matrices, self.biases)):
            x = torch.matmul(F.softplus(matrix), x) + bias
            if i < len(self.factors):
                x = x + torch.tanh(self.factors[i]) * torch.tanh(x)
        return x

    def likelihood(self, z: torch.Tensor) -> torch.Tensor:
        """Probability mass of the unit-width bin centred on every element of z (N, C, H, W)."""
        n, c, h, w = z.shape
        values = z.permute(1, 0, 2, 3).reshape(c, 1, -1)
        lower = self.logits_cdf(values - 0.5)
        upper = self.logits_cdf(values + 0.5)
        sign = -torch.sign(lower + upper).detach()   # evaluate in the flatter tail for accuracy
        p = (torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower)).abs()
        return p.reshape(c, n, h, w).permute(1, 0, 2, 3)

    @torch.no_grad()
    def cdf(self, values: torch.Tensor) -> torch.Tensor:
        """c(v) for a 1-D tensor of values, for every channel: (C, K) float64."""
        c = self.matrices[0].shape[0]
        x = values.reshape(1, 1, -1).expand(c, 1, -1).to(self.matrices[0].dtype)
        return torch.sigmoid(self.logits_cdf(x)).reshape(c, -1).double()
