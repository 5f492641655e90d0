"""Exact integer checkerboard context: the refined scale index agrees on every machine.

`CheckerboardContext` is exported to the same fixed point as the hyper-synthesis (weights
with `WEIGHT_BITS` fractional bits, activations with `ACT_BITS`) and run here on integers held
in float64, where every product and partial sum stays far below 2**53, so the result does not
depend on summation order, threads or BLAS. Inputs are only what both sides hold exactly: the
anchors' symbols (clipped to +-`CONTEXT_Q_LIMIT`) and the integer total scale coordinate of
the hyperprior plus the quality offset.

The depthwise 3x3 layer is written out as nine shifted multiply-adds (no convolution routine
can then pick a transform-based algorithm behind our back); the two 1x1 layers are matrix
products evaluated only at the non-anchor positions, in row strips with a one-row halo, so
memory stays bounded on big images. NumPy only: decoding never imports torch.
"""
from __future__ import annotations

from functools import partial

import numpy as np

from .. import workers
from ..spans import halo_windows
from .constants import CONTEXT_Q_LIMIT, COORDINATE_DIVISOR
from .fixed_point import ACT_BITS, ACT_LIMIT_BITS, WEIGHT_BITS, clamp, rescale

STRIP_ROWS = 16          # latent rows per strip (strips run side by side, see `workers`)
WEIGHT_LIMIT_BITS = 18   # |integer weight| bound checked at load time


def export_context(context) -> dict[str, np.ndarray]:
    """Fixed-point copies of a float `CheckerboardContext` (what goes into the weights file)."""
    def fixed(t, bits: int) -> np.ndarray:   # t: a torch parameter
        value = np.round(t.detach().double().cpu().numpy() * (1 << bits))
        if np.abs(value).max() > 2 ** 31:
            raise ValueError("context weight too large for the integer export")
        return value.astype(np.int64)

    return {
        "neighbours": fixed(context.neighbours.weight[:, 0], WEIGHT_BITS),          # (2M, 3, 3)
        "mix_weight": fixed(context.mix.weight[:, :, 0, 0], WEIGHT_BITS),           # (H, 3M)
        "mix_bias": fixed(context.mix.bias, WEIGHT_BITS + ACT_BITS),
        "head_weight": fixed(context.head.weight[:, :, 0, 0], WEIGHT_BITS),         # (2M, H)
        "head_bias": fixed(context.head.bias, WEIGHT_BITS + ACT_BITS),
    }


def non_anchor_mask(height: int, width: int) -> np.ndarray:
    """(H, W) bool: True where row + column is odd (coded second)."""
    return (np.add.outer(np.arange(height), np.arange(width)) % 2) == 1


def checkerboard_half(a: np.ndarray, second: bool) -> np.ndarray:
    """The anchors (``second`` False) or the non-anchors of ``a`` (C, H, W), W even, as a
    (C, H, W/2) array whose ravel() is the coding order: channel by channel, row by row,
    left to right (the order of ``a[:, mask].ravel()``). Strided copies instead of a
    boolean-mask gather, which is several times slower."""
    half = np.empty(a.shape[:2] + (a.shape[2] // 2,), dtype=a.dtype)
    half[:, 0::2] = a[:, 0::2, int(second)::2]
    half[:, 1::2] = a[:, 1::2, 1 - int(second)::2]
    return half


def set_checkerboard_half(a: np.ndarray, second: bool, values: np.ndarray) -> None:
    """Inverse of `checkerboard_half`: write ``values`` (C, H, W/2) into that half of ``a``."""
    a[:, 0::2, int(second)::2] = values[:, 0::2]
    a[:, 1::2, 1 - int(second)::2] = values[:, 1::2]


class IntegerContext:
    """Runs the exported context: for every non-anchor position, the integer corrections of
    the mean (units of 2**-ACT_BITS, gained domain) and of the scale coordinate (units of
    2**-ACT_BITS table steps)."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        # activations are clamped to +-2**ACT_LIMIT_BITS, fan-in <= 3M <= 2**10: with weights
        # below 2**WEIGHT_LIMIT_BITS every sum stays below 2**53
        for name in ("neighbours", "mix_weight", "head_weight"):
            if np.abs(arrays[name]).max(initial=0) > 2 ** WEIGHT_LIMIT_BITS:
                raise ValueError(f"context {name} out of range for exact arithmetic")
        self.neighbours = arrays["neighbours"].astype(np.float64)        # (2M, 3, 3)
        self.mix_weight = arrays["mix_weight"].astype(np.float64)
        self.mix_bias = arrays["mix_bias"].astype(np.float64)
        self.head_weight = arrays["head_weight"].astype(np.float64)
        self.head_bias = arrays["head_bias"].astype(np.float64)
        self.latent_channels = self.head_weight.shape[0] // 2
        if self.mix_weight.shape[1] != 3 * self.latent_channels or self.mix_weight.shape[1] > 1024:
            raise ValueError("context layer shapes do not fit together")

    def each_strip(self, symbols: np.ndarray, coordinate: np.ndarray, use) -> None:
        """Run the context strip by strip and hand each strip's corrections to ``use(rows,
        d_mean, d_coordinate)``: int32 arrays (M, strip rows, W), zero at anchors.

        ``symbols`` (M, H, W) int (only anchors are read); ``coordinate`` (M, H, W) int, the
        total scale coordinate in 2**-ACT_BITS table steps (only non-anchors are read). Strips
        keep temporaries small on big images; they run side by side on the cores (see
        `workers`), each calling ``use`` in its own piece of work, so ``use`` must only write
        non-anchor positions of the latent rows ``rows`` it is given (the other strips read
        the anchors meanwhile, also in those rows)."""
        def strip(window: slice, core: slice) -> None:
            mean, coord = self._strip(symbols[:, window], coordinate[:, core],
                                      core.start - window.start, window.start)
            use(core, mean, coord)

        workers.run([partial(strip, window, core)
                     for window, core in halo_windows(symbols.shape[1], STRIP_ROWS, 1)])

    def __call__(self, symbols: np.ndarray, coordinate: np.ndarray):
        """Whole-array form of `each_strip`: (d_mean, d_coordinate), each (M, H, W) int32."""
        d_mean = np.zeros(symbols.shape, dtype=np.int32)
        d_coordinate = np.zeros(symbols.shape, dtype=np.int32)

        def keep(rows, mean, coord):
            d_mean[:, rows] = mean
            d_coordinate[:, rows] = coord

        self.each_strip(symbols, coordinate, keep)
        return d_mean, d_coordinate

    def _strip(self, symbols: np.ndarray, coordinate: np.ndarray, skip: int, first_row: int):
        """One strip: ``symbols`` include the halo rows, ``coordinate`` only the kept rows
        (which start ``skip`` rows into ``symbols``; ``first_row``: image row of symbols[0]).

        Only the outputs at non-anchor positions are needed, and the four neighbours of a
        non-anchor are anchors: the other taps of the 3x3 layer meet zeros (the float model
        masks non-anchors out). Non-anchors form two strided sub-grids (even rows / odd
        columns and odd rows / even columns; latent sizes are multiples of 4 and strips start
        on even rows), so every neighbour set is a strided slice of the zero-padded strip.
        """
        m, _, cols = symbols.shape
        kept = coordinate.shape[1]
        top = first_row + skip
        assert top % 2 == 0 and kept % 2 == 0 and cols % 2 == 0
        p = np.zeros((m, kept + 2, cols + 2), dtype=np.float64)   # zero padding as in training
        # symbols row k is image row first_row + k, padded row 1 + k - skip
        p[:, 1 - skip:1 - skip + symbols.shape[1], 1:-1] = clamp(symbols, -CONTEXT_Q_LIMIT, CONTEXT_Q_LIMIT)

        def neighbour_views(a):
            """The neighbours (up, down, left, right) of the two sub-grids: strided views of a."""
            return ((a[:, 0:kept:2, 2::2], a[:, 2:kept + 2:2, 2::2], a[:, 1:kept + 1:2, 1:cols + 1:2],
                     a[:, 1:kept + 1:2, 3::2]),
                    (a[:, 1:kept + 1:2, 1:cols + 1:2], a[:, 3::2, 1:cols + 1:2], a[:, 2::2, 0:cols:2],
                     a[:, 2::2, 2::2]))
        taps = ((0, 1), (2, 1), (1, 0), (1, 2))            # (dy, dx) of up, down, left, right
        w_signed = [self.neighbours[:m, dy, dx, None, None] for dy, dx in taps]
        w_magnitude = [self.neighbours[m:, dy, dx, None, None] for dy, dx in taps]
        coords = (coordinate[:, 0::2, 1::2], coordinate[:, 1::2, 0::2])
        signed_views, magnitude_views = neighbour_views(p), neighbour_views(np.abs(p))
        # the mix layer's input, written in place: (signed, magnitude, coordinate) features of
        # the first sub-grid's positions, then of the second's
        columns = np.empty((3 * m, 2, kept // 2, cols // 2))
        scratch = np.empty((m, kept // 2, cols // 2))
        limit = float(1 << ACT_LIMIT_BITS)
        for g, coord in enumerate(coords):
            block = columns[:, g]
            for target, weights, views in ((block[:m], w_signed, signed_views[g]),
                                           (block[m:2 * m], w_magnitude, magnitude_views[g])):
                np.multiply(weights[0], views[0], out=target)
                for w, v in zip(weights[1:], views[1:]):
                    target += np.multiply(w, v, out=scratch)
            features = block[:2 * m]
            features *= 1 << ACT_BITS
            np.clip(rescale(features), -limit, limit, out=features)
            block[2 * m:] = clamp(np.floor_divide(coord.astype(np.int64), COORDINATE_DIVISOR),
                                  -(1 << ACT_LIMIT_BITS), 1 << ACT_LIMIT_BITS)
        split = (kept // 2) * (cols // 2)
        hidden = self.mix_weight @ columns.reshape(3 * m, -1)
        hidden += self.mix_bias[:, None]
        np.clip(rescale(hidden), 0.0, limit, out=hidden)
        out = self.head_weight @ hidden
        out += self.head_bias[:, None]
        out = np.clip(rescale(out), -limit, limit).astype(np.int32)   # |values| <= 2**ACT_LIMIT_BITS
        mean = np.zeros((m, kept, cols), dtype=np.int32)
        coord = np.zeros((m, kept, cols), dtype=np.int32)
        half = (m, kept // 2, cols // 2)
        for target, values in ((mean, out[:m]), (coord, out[m:])):
            target[:, 0::2, 1::2] = values[:, :split].reshape(half)
            target[:, 1::2, 0::2] = values[:, split:].reshape(half)
        return mean, coord
