"""The synthesis transform g_s in plain NumPy, so that decoding on a CPU never imports torch.

Importing torch costs well over a second, longer than the whole decode; the CPU decoder
therefore runs the exported float weights here. The layers are the same as `Synthesis`
(`transforms.py`): residual blocks (3x3 conv, ReLU, 1x1 conv, skip) and a 3x3 conv into
PixelShuffle(8), all in float32.

How a 3x3 convolution becomes nine matrix products without copying: the latent is kept
channels-last in a zero-bordered grid flattened to ``((H + 2) * (W + 2) + 2, C)`` rows. The
tap (dy, dx) of every output position is then the contiguous row range starting at
``dy * (W + 2) + dx``; outputs are computed on the ``H * (W + 2)`` rows of the padded width,
whose two extra columns per row land exactly on the border columns of the grid and are zeroed
again after every layer. Each product is a BLAS sgemm on a view. The layers run in bands of
`BAND_ROWS` latent rows, side by side on the cores (`workers`); a residual block reads one
grid and writes a second, so no band reads rows another band is writing.

Results equal torch's to float32 rounding (pixels agree up to one step of 255). A file always
decodes the same way on the same machine (the tiling depends only on the image size and the
codec's ``tile_size``); other tilings agree to within one step, as BLAS may sum differently for
matrices of other shapes.
"""
from __future__ import annotations

from functools import partial

import numpy as np

from .. import workers
from ..spans import halo_tiles
from .constants import BLOCK

BAND_ROWS = 8      # latent rows per piece of work (see `workers`): fixed, so results never depend on threads


class NumpySynthesis:
    """Runs ``synthesis.*`` float weights: y_hat (M, h, w) float32 -> RGB uint8 (8h, 8w, 3)."""

    def __init__(self, params: dict[str, np.ndarray], blocks: int, prefix: str = "synthesis."):
        def get(name):
            return np.asarray(params[prefix + name], dtype=np.float32)

        self.blocks = []
        for i in range(blocks):
            w2 = get(f"blocks.{i}.conv2.weight")
            if w2.shape[2:] != (1, 1):
                raise ValueError("synthesis residual block does not end in a 1x1 convolution")
            self.blocks.append((conv3x3_taps(get(f"blocks.{i}.conv1.weight")), get(f"blocks.{i}.conv1.bias"),
                                np.ascontiguousarray(w2[:, :, 0, 0].T), get(f"blocks.{i}.conv2.bias")))
        self.to_blocks = (conv3x3_taps(get("to_blocks.weight")), get("to_blocks.bias"))
        if self.to_blocks[0].shape[3] != 3 * BLOCK * BLOCK:
            raise ValueError("synthesis output does not fit PixelShuffle(8) to RGB")
        self.halo = blocks + 1      # latent rows of context each output row needs (one per 3x3 layer)

    def render(self, y_hat: np.ndarray, out: np.ndarray, tile: int = 0) -> None:
        """Write the image of ``y_hat`` (M, h, w) into ``out`` (<= 8h, <= 8w, 3) uint8, cropping
        to ``out``'s size. ``tile`` > 0 runs square tiles of that many latent positions per
        side, each with a halo of `halo` positions (memory bounded by the tile, whatever the
        image's size or shape); 0 runs the whole latent at once."""
        for rows, cols, keep_rows, keep_cols in halo_tiles(y_hat.shape[1:], tile, self.halo):
            top, left = keep_rows.start * BLOCK, keep_cols.start * BLOCK
            height = min((keep_rows.stop - keep_rows.start) * BLOCK, out.shape[0] - top)
            width = min((keep_cols.stop - keep_cols.start) * BLOCK, out.shape[1] - left)
            if height <= 0 or width <= 0:
                continue          # a tile entirely in the padding
            pixels = self._run(y_hat[:, rows, cols])
            row0 = (keep_rows.start - rows.start) * BLOCK
            col0 = (keep_cols.start - cols.start) * BLOCK
            out[top:top + height, left:left + width] = pixels[row0:row0 + height, col0:col0 + width]

    def _run(self, y: np.ndarray) -> np.ndarray:
        channels, height, width = y.shape
        pitch = width + 2
        # two grids: each residual block reads one and writes the other, so that the bands of
        # rows (pieces of work for `workers.run`) never read what another band is writing
        grids = [bordered_grid(height, width, channels)[:2] for _ in range(2)]
        grids[0][1].reshape(height, pitch, channels)[:, :width] = y.transpose(1, 2, 0)
        bands = [(r * pitch, min(r + BAND_ROWS, height) * pitch) for r in range(0, height, BAND_ROWS)]
        for layer in self.blocks:
            source, target = grids
            workers.run([partial(self._block_band, layer, source, target, pitch, width, a, b)
                         for a, b in bands])
            grids.reverse()
        pixels = np.empty((height * BLOCK, width * BLOCK, 3), np.uint8)
        workers.run([partial(self._pixel_band, grids[0][0], pitch, width, a, b, pixels)
                     for a, b in bands])
        return pixels

    @staticmethod
    def _block_band(layer, source, target, pitch: int, width: int, a: int, b: int) -> None:
        """One residual block on the grid rows ``a:b``: target = source + W2 relu(W1 * source)."""
        w1, b1, w2, b2 = layer
        rows = b - a
        h, scratch = np.empty((rows, w1.shape[3]), np.float32), np.empty((rows, w1.shape[3]), np.float32)
        conv3x3_rows(source[0][a:], pitch, rows, w1, b1, h, scratch)
        np.maximum(h, 0.0, out=h)
        residual = np.matmul(h, w2)
        residual += b2
        out = target[1][a:b]
        np.add(source[1][a:b], residual, out=out)
        out.reshape(-1, pitch, out.shape[1])[:, width:] = 0.0      # the wrapped border columns

    def _pixel_band(self, grid, pitch: int, width: int, a: int, b: int, pixels: np.ndarray) -> None:
        """The last layer on the grid rows ``a:b``, rounded to 8 bits, into their pixel rows."""
        weight, bias = self.to_blocks
        rows = b - a
        out = np.empty((rows, weight.shape[3]), np.float32)
        conv3x3_rows(grid[a:], pitch, rows, weight, bias, out, np.empty_like(out))
        np.clip(out, 0.0, 1.0, out=out)
        out *= 255.0
        np.rint(out, out=out)
        # channel c*64 + i*8 + j of latent (r, x) is pixel (8r + i, 8x + j), colour c
        first, count = a // pitch, rows // pitch
        cube = out.astype(np.uint8).reshape(count, pitch, 3, BLOCK, BLOCK)[:, :width]
        pixels[first * BLOCK:(first + count) * BLOCK] = cube.transpose(0, 3, 1, 4, 2).reshape(
            count * BLOCK, width * BLOCK, 3)


def conv3x3_taps(weight: np.ndarray) -> np.ndarray:
    """A (Cout, Cin, 3, 3) convolution weight as (3, 3, Cin, Cout) float32 tap matrices."""
    if weight.shape[2:] != (3, 3):
        raise ValueError("layer is not a 3x3 convolution")
    return np.ascontiguousarray(np.asarray(weight, dtype=np.float32).transpose(2, 3, 1, 0))


def bordered_grid(height: int, width: int, channels: int):
    """A zero-bordered channels-last grid flattened to rows (see the module docstring):
    ``(grid, inner, border)`` where ``inner`` (height * (width + 2), channels) is where a
    3x3 layer's outputs go and ``border`` the two wrapped columns to re-zero after writing."""
    pitch = width + 2
    n = height * pitch
    grid = np.zeros(((height + 2) * pitch + 2, channels), dtype=np.float32)
    inner = grid[pitch + 1:pitch + 1 + n]
    return grid, inner, inner.reshape(height, pitch, channels)[:, width:]


def conv3x3_rows(grid, pitch, n, taps, bias, out, scratch) -> None:
    """out (n, Cout) = bias + sum over the nine taps of shifted grid rows @ tap weights."""
    out[:] = bias
    for dy in range(3):
        for dx in range(3):
            start = dy * pitch + dx
            np.matmul(grid[start:start + n], taps[dy, dx], out=scratch)
            out += scratch
