"""Exact integer hyper-synthesis: the part of the decoder that decides probabilities.

If the decoder's scale for a latent differed from the encoder's by a single table step, the
range decoder would silently produce garbage. So the trained float `HyperSynthesis` is exported
to fixed point (weights with `WEIGHT_BITS` fractional bits, activations with `ACT_BITS`) and run
here on integers held in float64 (`fixed_point.py`). Every product and partial sum is an
integer below 2**53, so float64 arithmetic is exact whatever the summation order, thread count
or BLAS: the result is the same on every machine. Activations are clamped to
+-2**ACT_LIMIT_BITS after each layer and weights to +-2**15 at export, which bounds every sum
(fan-in <= 2**12) well below 2**53. NumPy only: decoding never imports torch.
"""
from __future__ import annotations

import math
from fractions import Fraction
from functools import partial

import numpy as np

from .. import workers
from ..spans import halo_windows
from .constants import SCALE_COUNT
from .fixed_point import ACT_BITS, ACT_LIMIT_BITS, WEIGHT_BITS, clamp, exact_conv, pixel_shuffle, rescale

Z_LIMIT = 1 << 15          # |z| is clamped to this on both sides before entering the network
HEAD_CHUNK = 1024          # latent positions per chunk of the last (1x1) layer


class IntegerHyperSynthesis:
    """Runs the exported integer layers: z (C, h, w) int -> (gain-free mean, coordinate).

    The mean comes back as float64 (exact multiples of 2**-ACT_BITS); the scale coordinate as
    int64 in units of 2**-ACT_BITS table steps, to which `scale_index` adds the quality offset.
    """

    def __init__(self, layers: list[tuple[np.ndarray, np.ndarray, int, bool]], latent_channels: int):
        # each layer: (int weight (out, in, k, k), int bias (out,), kernel padding, pixel-shuffle after)
        self.layers = [(w.astype(np.float64), b.astype(np.float64), pad, shuffle)
                       for w, b, pad, shuffle in layers]
        self.latent_channels = latent_channels
        for w, _, _, _ in self.layers:
            fan_in = w.shape[1] * w.shape[2] * w.shape[3]
            if fan_in > 4096 or np.abs(w).max(initial=0) > 2 ** 15:
                raise ValueError("hyper-synthesis layer out of range for exact arithmetic")

    def __call__(self, z: np.ndarray, strip_rows: int = 8):
        """Run on horizontal strips of z with a halo wide enough for the receptive field, so
        memory stays bounded on big images; the cropped strips equal the whole-image result."""
        rows = z.shape[1]
        if rows <= strip_rows:
            return self._run(z)
        halo, up = integer_hyper_geometry(self.layers)   # z rows that reach a row; rows per z row
        means, coordinates = [], []
        for window, core in halo_windows(rows, strip_rows, halo):
            mean, coordinate = self._run(z[:, window])
            keep = slice((core.start - window.start) * up, (core.stop - window.start) * up)
            means.append(mean[:, keep])
            coordinates.append(coordinate[:, keep])
        return np.concatenate(means, axis=1), np.concatenate(coordinates, axis=1)

    def _run(self, z: np.ndarray):
        a = clamp(z, -Z_LIMIT, Z_LIMIT).astype(np.float64) * (1 << ACT_BITS)
        limit = float(1 << ACT_LIMIT_BITS)
        for w, b, pad, shuffle in self.layers[:-1]:
            a = rescale(exact_conv(a, w, b, pad))
            if shuffle:
                a = pixel_shuffle(a, 2)
            np.clip(a, 0.0, limit, out=a)            # ReLU, and keep sums far below 2**53
        return self._head(a)

    def _head(self, a: np.ndarray):
        """The last layer (1x1: no neighbours) in column chunks: its output is the largest
        tensor of the network, and chunking keeps each temporary in cache instead of paying
        for several full-size float64 arrays (measured: 35 ms instead of 50-170 ms for a
        768x512 image). The arithmetic per element is the same as a whole-array pass."""
        w, b, pad, shuffle = self.layers[-1]
        assert w.shape[-1] == 1 and pad == 0 and not shuffle, "the head must be a 1x1 conv"
        m, (rows, cols) = self.latent_channels, a.shape[1:]
        flat = a.reshape(a.shape[0], -1)
        matrix = w.reshape(w.shape[0], -1)
        limit = float(1 << ACT_LIMIT_BITS)
        mean = np.empty((m, flat.shape[1]))
        coordinate = np.empty((m, flat.shape[1]), dtype=np.int64)

        def chunk(part: slice) -> None:
            out = matrix @ flat[:, part]
            out += b[:, None]
            np.clip(rescale(out), -limit, limit, out=out)
            mean[:, part] = out[:m] * (1.0 / (1 << ACT_BITS))   # exact: a power of two
            coordinate[:, part] = out[m:]

        # the chunks are also the pieces of work spread over the cores (see `workers`)
        workers.run([partial(chunk, slice(start, start + HEAD_CHUNK))
                     for start in range(0, flat.shape[1], HEAD_CHUNK)])
        return mean.reshape(m, rows, cols), coordinate.reshape(m, rows, cols)


def level_fraction(quality_hundredths: int, levels: int) -> tuple[int, int, int]:
    """Quality (in hundredths, 100..10000) -> (anchor level i, weight f of level i+1, denominator)."""
    denominator = 9900
    position = (int(quality_hundredths) - 100) * (levels - 1)
    i = min(position // denominator, levels - 2)
    return i, position - i * denominator, denominator


def scale_index(coordinate: np.ndarray, offsets: np.ndarray, quality_hundredths: int) -> np.ndarray:
    """Integer scale index for every latent from the coordinate and the per-level gain offsets.

    ``offsets`` (LEVELS, M) int64: log(gain) in units of 2**-ACT_BITS table steps, interpolated
    here with integer arithmetic only, so every machine picks the same table.
    """
    return index_from_total(coordinate + quality_offset(offsets, quality_hundredths)[:, None, None])


def quality_offset(offsets: np.ndarray, quality_hundredths: int) -> np.ndarray:
    """(M,) int64: the gain's coordinate offset at a quality, by integer interpolation."""
    i, f, d = level_fraction(quality_hundredths, offsets.shape[0])
    return (offsets[i].astype(np.int64) * (d - f) + offsets[i + 1].astype(np.int64) * f) // d


def index_from_total(total: np.ndarray, in_place: bool = False) -> np.ndarray:
    """Scale index from a total coordinate (2**-ACT_BITS table steps): round and clip.
    ``in_place``: overwrite ``total`` (int64) instead of working on a copy."""
    index = total if in_place else total.astype(np.int64)
    index += 1 << (ACT_BITS - 1)
    index >>= ACT_BITS
    return clamp(index, 0, SCALE_COUNT - 1, out=index)


def export_gain_offsets(encoder_log_gain) -> np.ndarray:
    """(LEVELS, M) float log-gains (a torch parameter) -> int64 offsets in 2**-ACT_BITS table steps."""
    from .constants import LOG_STEP

    return np.round(encoder_log_gain.detach().double().numpy() / LOG_STEP * (1 << ACT_BITS)).astype(np.int64)


def export_layers(hyper_synthesis) -> list[tuple[np.ndarray, np.ndarray, int, bool]]:
    """Fixed-point copies of a float `HyperSynthesis` (what goes into the weights file)."""
    layers = []
    for conv, shuffle in zip(hyper_synthesis.convs, hyper_synthesis.shuffle_after):
        w = np.round(conv.weight.detach().double().cpu().numpy() * (1 << WEIGHT_BITS))
        b = np.round(conv.bias.detach().double().cpu().numpy() * (1 << (WEIGHT_BITS + ACT_BITS)))
        if np.abs(w).max() > 2 ** 15:
            raise ValueError("hyper-synthesis weight too large for the integer export")
        layers.append((w.astype(np.int32), b.astype(np.int64), conv.padding[0], shuffle))
    return layers


def integer_hyper_geometry(layers) -> tuple[int, int]:
    """(halo in z positions, output positions per z position) of the integer hyper-synthesis.

    ``layers``: the exported ``(weight, bias, padding, pixel_shuffle_after)`` list run by
    `IntegerHyperSynthesis` (stride-1 convolutions, PixelShuffle(2) where flagged).
    """
    halo, up = Fraction(0), 1
    for w, _, pad, shuffle in layers:
        k = w.shape[-1]
        if k != 2 * pad + 1:
            raise NotImplementedError("tiling: integer hyper layer is not a centred convolution")
        halo += Fraction(pad, up)
        if shuffle:
            up *= 2
    return math.ceil(halo), up
