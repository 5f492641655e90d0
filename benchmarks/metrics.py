"""Image quality metrics for the benchmarks: PSNR and multi-scale SSIM.

One job: turn an (original, decoded) pair of 8-bit RGB images into the two
numbers learned-codec papers report, computed the way those papers compute
them, so our curves can sit next to published ones.

* PSNR: 10*log10(255^2 / MSE), MSE over all pixels and channels of the 8-bit
  values (one number per image; averaging over images is the caller's job).
* MS-SSIM: Wang, Simoncelli & Bovik (2003), five scales with weights
  (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), an 11x11 Gaussian window with
  sigma 1.5 applied without padding ("valid"), K1 = 0.01, K2 = 0.03, dynamic
  range 255, 2x2 average down-sampling between scales.  Contrast-structure
  terms (scales 1-4) and the full SSIM (scale 5) are clamped at zero before
  the weighted product, computed per channel, then averaged over channels
  (the convention of the widely used PyTorch implementations, hence of
  published RGB MS-SSIM curves).  The smallest side must be at least 161
  pixels so the coarsest scale still holds one 11x11 window.
* ``msssim_db``: -10*log10(1 - MS-SSIM), the dB scale used in plots.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["MS_SSIM_WEIGHTS", "MIN_SIDE", "as_array", "psnr", "ms_ssim", "msssim_db"]

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
WINDOW = 11
SIGMA = 1.5
K1, K2 = 0.01, 0.03
DTYPE = torch.float32
MIN_SIDE = (WINDOW - 1) * 2 ** (len(MS_SSIM_WEIGHTS) - 1) + 1   # 161


def as_array(image) -> np.ndarray:
    """HxWxC uint8 array from a PIL image or an array (HxW becomes HxWx1)."""
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise TypeError(f"expected 8-bit pixels, got {a.dtype}")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3:
        raise ValueError(f"expected an HxW or HxWxC image, got shape {a.shape}")
    return a


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = as_array(a), as_array(b)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    return a, b


def psnr(original, decoded, peak: float = 255.0) -> float:
    """PSNR in dB over all pixels and channels; ``inf`` for identical images."""
    a, b = _pair(original, decoded)
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else float(10.0 * math.log10(peak * peak / mse))


def _gaussian(size: int = WINDOW, sigma: float = SIGMA) -> torch.Tensor:
    t = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(t * t) / (2 * sigma * sigma))
    return g / g.sum()


def _blur(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter per channel, valid region only."""
    c = x.shape[1]
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _ssim_cs(x: torch.Tensor, y: torch.Tensor, g: torch.Tensor, data_range: float):
    """Per-channel mean SSIM and mean contrast-structure term, shape (C,)."""
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    # Centre both images on the original's channel means so that the
    # E[x^2] - E[x]^2 variance estimates keep their precision in float32
    # (variances and covariance do not change under a shared offset).
    offset = x.mean(dim=(2, 3), keepdim=True)
    x, y = x - offset, y - offset
    mx, my = _blur(x, g), _blur(y, g)
    vx = _blur(x * x, g) - mx * mx
    vy = _blur(y * y, g) - my * my
    cov = _blur(x * y, g) - mx * my
    cs = (2 * cov + c2) / (vx + vy + c2)
    mx, my = mx + offset, my + offset
    lum = (2 * mx * my + c1) / (mx * mx + my * my + c1)
    ssim_map = (lum * cs).to(torch.float64)
    return ssim_map.mean(dim=(0, 2, 3)), cs.to(torch.float64).mean(dim=(0, 2, 3))


def _halve(x: torch.Tensor) -> torch.Tensor:
    """2x2 average down-sampling; an odd last row/column is repeated first."""
    h, w = x.shape[-2:]
    if h % 2 or w % 2:
        x = F.pad(x, (0, w % 2, 0, h % 2), mode="replicate")
    return F.avg_pool2d(x, 2)


def ms_ssim(original, decoded, data_range: float = 255.0,
            weights=MS_SSIM_WEIGHTS) -> float:
    """Five-scale MS-SSIM in [0, 1] of two equal-shape 8-bit images.

    Raises ValueError when a side is shorter than ``MIN_SIDE`` (161) pixels.
    """
    a, b = _pair(original, decoded)
    levels = len(weights)
    need = (WINDOW - 1) * 2 ** (levels - 1) + 1
    if min(a.shape[:2]) < need:
        raise ValueError(f"MS-SSIM with {levels} scales needs sides of at least "
                         f"{need} pixels, got {a.shape[1]}x{a.shape[0]}")
    x = torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).to(DTYPE)[None]
    y = torch.from_numpy(np.ascontiguousarray(b.transpose(2, 0, 1))).to(DTYPE)[None]
    g = _gaussian().to(DTYPE)
    w = torch.tensor(weights, dtype=torch.float64)
    terms = []
    with torch.no_grad():
        for level in range(levels):
            ssim_c, cs_c = _ssim_cs(x, y, g, data_range)
            if level < levels - 1:
                terms.append(torch.relu(cs_c))
                x, y = _halve(x), _halve(y)
            else:
                terms.append(torch.relu(ssim_c))
        stacked = torch.stack(terms)                              # (levels, C)
        per_channel = torch.prod(stacked ** w[:, None], dim=0)    # (C,)
    return float(per_channel.mean())


def msssim_db(value: float) -> float:
    """-10*log10(1 - MS-SSIM); ``inf`` for a perfect score."""
    if value is None or not math.isfinite(value):
        return math.nan
    return math.inf if value >= 1.0 else -10.0 * math.log10(1.0 - value)
