"""Fixed-point arithmetic for the networks that decide probabilities (hyper-synthesis, context).

Weights carry `WEIGHT_BITS` fractional bits and activations `ACT_BITS`; the integers are held
in float64, where every product and partial sum below 2**53 is exact. The sums therefore do
not depend on summation order, BLAS, thread count or machine, which is what lets a file decode
to the same latents everywhere. Plain NumPy: decoding never needs torch.
"""
from __future__ import annotations

import numpy as np

WEIGHT_BITS = 12
ACT_BITS = 8
ACT_LIMIT_BITS = 24


def clamp(a: np.ndarray, low, high, out: np.ndarray | None = None) -> np.ndarray:
    """np.clip(a, low, high), several times faster on integer arrays: NumPy's clip takes a
    slow path for int64 (measured 25 ms against 6 ms for a 768x512 image's latent). Same
    result as np.clip for floats too (NaN included)."""
    out = np.maximum(a, low, out=out)
    return np.minimum(out, high, out=out)


def rescale(acc: np.ndarray) -> np.ndarray:
    """round(acc / 2**WEIGHT_BITS) in place, exact (a power of two), after every layer."""
    acc *= 1.0 / (1 << WEIGHT_BITS)
    acc += 0.5
    return np.floor(acc, out=acc)


def exact_conv(a: np.ndarray, weight: np.ndarray, bias: np.ndarray, pad: int) -> np.ndarray:
    """Stride-1 convolution of ``a`` (C, H, W) with ``weight`` (O, C, k, k), ``bias`` (O,), as
    im2col + one float64 matrix product: only multiplies and adds of integers, so the result is
    exact (no transform-based algorithm can be picked behind our back). Returns (O, H, W)."""
    channels, height, width = a.shape
    k = weight.shape[-1]
    if pad:
        padded = np.zeros((channels, height + 2 * pad, width + 2 * pad))
        padded[:, pad:pad + height, pad:pad + width] = a
    else:
        padded = a
    columns = np.empty((channels, k, k, height, width))
    for dy in range(k):
        for dx in range(k):
            columns[:, dy, dx] = padded[:, dy:dy + height, dx:dx + width]
    out = weight.reshape(weight.shape[0], -1) @ columns.reshape(channels * k * k, -1)
    out += bias[:, None]
    return out.reshape(weight.shape[0], height, width)


def pixel_shuffle(a: np.ndarray, r: int) -> np.ndarray:
    """(C*r*r, H, W) -> (C, H*r, W*r): channel c*r*r + i*r + j goes to pixel (h*r+i, w*r+j)."""
    channels, height, width = a.shape
    c = channels // (r * r)
    return a.reshape(c, r, r, height, width).transpose(0, 3, 1, 4, 2).reshape(c, height * r, width * r)
