"""Analysis and synthesis transforms: image <-> latent y at 1/8 resolution.

The transforms start life as a working transform coder instead of noise: the first analysis
layer is a 16x16 lapped window whose centre holds an 8x8 colour KLT (PCA) of image blocks, the
last synthesis layer holds its inverse, and every nonlinear residual block starts as the
identity. Training then only has to improve on an orthonormal block transform, which is what
makes training on a plain CPU worthwhile.

The synthesis upsamples with a 3x3 convolution followed by PixelShuffle (sub-pixel convolution)
rather than ConvTranspose2d: on the 2-core CPU it was measured faster (see benchmarks/layers.py).
"""
from __future__ import annotations

import torch
from torch import nn

from .constants import BLOCK  # noqa: E402  (pixels per latent position along each axis)
WINDOW = 16        # analysis window (lapped: 4 pixels of overlap on every side)


class ResidualBlock(nn.Module):
    """x + W2 * relu(W1 * x); W2 starts at zero so the block starts as the identity."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, hidden, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden, channels, 1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(torch.relu(self.conv1(x)))


class Analysis(nn.Module):
    """g_a: RGB in [0, 1] (N, 3, H, W) with H, W multiples of 8 -> y (N, M, H/8, W/8)."""

    def __init__(self, latent_channels: int = 192, hidden: int = 128, blocks: int = 2):
        super().__init__()
        pad = (WINDOW - BLOCK) // 2
        self.lapped = nn.Conv2d(3, latent_channels, WINDOW, stride=BLOCK, padding=pad)
        self.blocks = nn.Sequential(*[ResidualBlock(latent_channels, hidden) for _ in range(blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.lapped(x))


class Synthesis(nn.Module):
    """g_s: y (N, M, h, w) -> RGB (N, 3, 8h, 8w)."""

    def __init__(self, latent_channels: int = 192, hidden: int = 128, blocks: int = 3):
        super().__init__()
        self.blocks = nn.Sequential(*[ResidualBlock(latent_channels, hidden) for _ in range(blocks)])
        self.to_blocks = nn.Conv2d(latent_channels, 3 * BLOCK * BLOCK, 3, padding=1)
        self.shuffle = nn.PixelShuffle(BLOCK)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.to_blocks(self.blocks(y)))


@torch.no_grad()
def init_from_klt(analysis: Analysis, synthesis: Synthesis, patches: torch.Tensor) -> torch.Tensor:
    """Set the linear layers to an orthonormal 8x8 colour KLT estimated from ``patches``.

    ``patches``: (P, 3, 8, 8) image blocks in [0, 1]. The analysis centre taps get the
    eigenvectors (largest variance first), the synthesis centre tap their transpose, so that
    synthesis(analysis(x)) == x exactly at initialisation. Returns each coefficient's std.
    """
    m = analysis.lapped.out_channels
    flat = patches.reshape(len(patches), -1).double()           # (P, 192), order (c, i, j)
    mean = flat.mean(0)
    cov = torch.cov((flat - mean).T)
    eigval, eigvec = torch.linalg.eigh(cov)
    basis = eigvec[:, torch.argsort(eigval, descending=True)][:, :m]   # (192, m)
    pad = (WINDOW - BLOCK) // 2
    w = torch.zeros(m, 3, WINDOW, WINDOW, dtype=torch.float64)
    w[:, :, pad:pad + BLOCK, pad:pad + BLOCK] = basis.T.reshape(m, 3, BLOCK, BLOCK)
    analysis.lapped.weight.copy_(w)
    analysis.lapped.bias.copy_(-(basis.T @ mean))
    # Synthesis: conv output channel o = c*64 + i*8 + j feeds PixelShuffle(8) -> pixel (c, i, j).
    ws = torch.zeros(3 * BLOCK * BLOCK, m, 3, 3, dtype=torch.float64)
    ws[:, :, 1, 1] = basis
    synthesis.to_blocks.weight.copy_(ws)
    synthesis.to_blocks.bias.copy_(mean)
    return eigval.sort(descending=True).values[:m].clamp_min(0).sqrt().float()
