"""The post-filter (`postfilter.PostFilter`) in plain NumPy, for the torch-free decoder.

The decoded 8-bit image is regrouped channels-last at 1/scale resolution (PixelUnshuffle), run
through the three 3x3 layers with the same flattened zero-bordered grid as the synthesis
(`numpy_synthesis.conv3x3_rows`: nine sgemm products per layer, no copies per tap), regrouped
back, added to the image and rounded to 8 bits again. Square tiles with a halo of three
positions (one per layer) keep the temporaries small for any image size or shape and give
the same pixels as one whole-image pass, up to float32 summation order; the tiles run side by
side on the cores (`workers`).
"""
from __future__ import annotations

from functools import partial

import numpy as np

from .. import workers
from ..spans import halo_tiles
from .constants import LEVELS
from .numpy_synthesis import bordered_grid, conv3x3_rows, conv3x3_taps

TILE = 128          # positions (at 1/scale resolution) per tile side
HALO = 3            # one per 3x3 layer


class NumpyPostFilter:
    """Runs ``postfilter.*`` float weights on an RGB uint8 image (returns a filtered copy)."""

    def __init__(self, params: dict[str, np.ndarray], prefix: str = "postfilter."):
        def get(name):
            return np.asarray(params[prefix + name], dtype=np.float32)

        self.first = (conv3x3_taps(get("first.weight")), get("first.bias"))
        self.level_bias = get("level_bias")
        self.middle = (conv3x3_taps(get("middle.weight")), get("middle.bias"))
        self.last = (conv3x3_taps(get("last.weight")), get("last.bias"))
        groups, width = self.first[0].shape[2:]
        self.scale = int(round((groups / 3) ** 0.5))
        expected = ((self.first[0].shape, (3, 3, groups, width)), (self.first[1].shape, (width,)),
                    (self.level_bias.shape, (width,)), (self.middle[0].shape, (3, 3, width, width)),
                    (self.middle[1].shape, (width,)), (self.last[0].shape, (3, 3, width, groups)),
                    (self.last[1].shape, (groups,)))
        if 3 * self.scale ** 2 != groups or any(got != want for got, want in expected):
            raise ValueError("post-filter layer shapes do not fit together")

    def apply(self, rgb: np.ndarray, level: float) -> np.ndarray:
        """The filtered copy of ``rgb`` (H, W, 3) uint8; H and W must be multiples of `scale`.
        ``level``: the continuous quality level 0..LEVELS-1 the image was coded at."""
        s = self.scale
        height, width = rgb.shape[0] // s, rgb.shape[1] // s
        if rgb.shape != (height * s, width * s, 3):
            raise ValueError(f"post-filter needs an RGB image with sides that are multiples of {s}")
        first_bias = self.first[1] + self.level_bias * np.float32(level / (LEVELS - 1))
        filtered = np.empty_like(rgb)

        def tile(rows, cols, keep_rows, keep_cols):
            result = self._run(rgb[rows.start * s:rows.stop * s, cols.start * s:cols.stop * s], first_bias)
            top, left = (keep_rows.start - rows.start) * s, (keep_cols.start - cols.start) * s
            filtered[keep_rows.start * s:keep_rows.stop * s, keep_cols.start * s:keep_cols.stop * s] = \
                result[top:top + (keep_rows.stop - keep_rows.start) * s,
                       left:left + (keep_cols.stop - keep_cols.start) * s]

        # the tiles are the pieces of work spread over the cores (see `workers`)
        workers.run([partial(tile, *spans) for spans in halo_tiles((height, width), TILE, HALO)])
        return filtered

    def _run(self, tile: np.ndarray, first_bias: np.ndarray) -> np.ndarray:
        s = self.scale
        rows, cols = tile.shape[0] // s, tile.shape[1] // s
        groups = 3 * s * s
        pitch = cols + 2
        n = rows * pitch
        # PixelUnshuffle: channel c*s*s + i*s + j of position (r, q) is pixel (s*r + i, s*q + j), colour c
        grouped = tile.reshape(rows, s, cols, s, 3).transpose(0, 2, 4, 1, 3).reshape(rows, cols, groups)
        grid, inner, border = bordered_grid(rows, cols, groups)
        view = inner.reshape(rows, pitch, groups)[:, :cols]
        np.multiply(grouped, np.float32(1 / 255), out=view)
        view -= np.float32(0.5)
        out = None
        for taps, bias in ((self.first[0], first_bias), self.middle, self.last):
            if out is not None:   # the previous layer's output, through the ReLU, is this layer's grid
                grid, inner, border = bordered_grid(rows, cols, out.shape[1])
                np.maximum(out, 0.0, out=inner)
                border[:] = 0.0
            out = np.empty((n, taps.shape[3]), np.float32)
            conv3x3_rows(grid, pitch, n, taps, bias, out, np.empty_like(out))
        correction = out.reshape(rows, pitch, groups)[:, :cols]
        pixels = correction.reshape(rows, cols, 3, s, s).transpose(0, 3, 1, 4, 2).reshape(rows * s, cols * s, 3)
        result = tile.astype(np.float32) + pixels * np.float32(255.0)
        np.clip(result, 0.0, 255.0, out=result)
        return np.rint(result).astype(np.uint8)
