"""Exact integer channel slices: the corrected scale index agrees on every machine.

`ChannelSlices` is exported to the fixed point of the hyper-synthesis and the checkerboard
context (weights with `WEIGHT_BITS` fractional bits, activations with `ACT_BITS`) and run here
on integers held in float64, where every product and partial sum stays below 2**53: inputs
are the earlier slices' symbols clipped to +-`CONTEXT_Q_LIMIT` (2**12, times 2**ACT_BITS) and
the scale index, activations are clamped to 2**ACT_LIMIT_BITS after each layer, and loading
refuses weights above 2**`WEIGHT_LIMIT_BITS`, biases above 2**`BIAS_LIMIT_BITS` and fan-ins
above `MAX_FAN_IN`, so a sum stays below 2**10 * 2**24 * 2**18 + 2**40 < 2**53. All three layers are 1x1, so positions are independent: they are worked
through in chunks of columns that run side by side on the cores (see `workers`) and keep
memory small on big images. NumPy only: decoding never imports torch.
"""
from __future__ import annotations

from functools import partial

import numpy as np

from .. import workers
from .constants import CONTEXT_Q_LIMIT, COORDINATE_DIVISOR, SCALE_COUNT
from .fixed_point import ACT_BITS, ACT_LIMIT_BITS, WEIGHT_BITS, clamp, rescale

CHUNK_COLUMNS = 1536       # positions per piece of work (a 768x512 image: two per half)
WEIGHT_LIMIT_BITS = 18     # |integer weight| bound checked at load time
BIAS_LIMIT_BITS = 40       # |integer bias| bound (units of 2**-(WEIGHT_BITS + ACT_BITS))
MAX_FAN_IN = 1024          # inputs per output of any layer
_LAYERS = ("anchors_in", "others_in", "mix", "head")


def export_slices(slices) -> dict[str, np.ndarray]:
    """Fixed-point copies of a float `ChannelSlices` (what goes into the weights file, under
    ``slices/``)."""
    def fixed(t, bits: int, limit_bits: int) -> np.ndarray:
        value = np.round(t.detach().double().cpu().numpy() * (1 << bits))
        if np.abs(value).max(initial=0) > 2 ** limit_bits:
            raise ValueError("slice weight too large for the integer export")
        return value.astype(np.int64)

    arrays = {"order": slices.order.cpu().numpy().astype(np.int64),
              "bounds": np.array(slices.bounds, dtype=np.int64)}
    for j, part in enumerate(slices.parts, start=1):
        for name in _LAYERS:
            arrays[f"{j}/{name}_weight"] = fixed(part[name].weight[:, :, 0, 0], WEIGHT_BITS,
                                                 WEIGHT_LIMIT_BITS)
            arrays[f"{j}/{name}_bias"] = fixed(part[name].bias, WEIGHT_BITS + ACT_BITS, BIAS_LIMIT_BITS)
    return arrays


class IntegerSlices:
    """Runs the exported slices: the scale index of slice j from the symbols of slices < j."""

    def __init__(self, arrays: dict[str, np.ndarray], latent_channels: int):
        order = np.asarray(arrays["order"], dtype=np.int64)
        bounds = [int(b) for b in np.asarray(arrays["bounds"]).ravel().tolist()]
        if sorted(order.tolist()) != list(range(latent_channels)):
            raise ValueError("slice order is not a permutation of the latent channels")
        starts = [0] + bounds
        if not (bounds and 0 < bounds[0]
                and all(a < b for a, b in zip(bounds, bounds[1:] + [latent_channels]))):
            raise ValueError("slice bounds out of order")
        self.edges = list(zip(starts, starts[1:] + [latent_channels]))
        self.order = order
        self.parts = []
        for j, (start, stop) in enumerate(self.edges[1:], start=1):
            layers = {}
            for name in _LAYERS:
                weight = np.asarray(arrays[f"{j}/{name}_weight"]).astype(np.float64)
                bias = np.asarray(arrays[f"{j}/{name}_bias"]).astype(np.float64)
                if (np.abs(weight).max(initial=0) > 2 ** WEIGHT_LIMIT_BITS
                        or np.abs(bias).max(initial=0) > 2 ** BIAS_LIMIT_BITS
                        or weight.ndim != 2 or weight.shape[1] > MAX_FAN_IN):
                    raise ValueError(f"slice {j} {name} out of range for exact arithmetic")
                layers[name] = (weight, bias)
            hidden = layers["mix"][0].shape[0]
            shapes_ok = (layers["anchors_in"][0].shape == (hidden, 2 * start)
                         and layers["others_in"][0].shape == (hidden, 2 * start)
                         and layers["mix"][0].shape == (hidden, hidden + stop - start)
                         and layers["head"][0].shape == (stop - start, hidden)
                         and all(b.shape == (w.shape[0],) for w, b in layers.values()))
            if not shapes_ok:
                raise ValueError(f"slice {j} layer shapes do not fit together")
            self.parts.append(layers)

    def channels(self) -> list[np.ndarray]:
        """The latent channels of slices 0, 1, ... (the coding order of a checkerboard half)."""
        return [self.order[start:stop] for start, stop in self.edges]

    def correct(self, symbols: np.ndarray, index: np.ndarray, anchors: bool) -> None:
        """Every slice's tables at once, where all symbols are known (the encoder): writes the
        corrected index of slices 1.. into ``index`` (M, n) in place. Each slice reads only the
        tables before any correction, its own, so the order does not matter."""
        for j, own in enumerate(self.channels()[1:], start=1):
            index[own] = self.index(j, symbols, index, anchors)

    def index(self, j: int, symbols: np.ndarray, index: np.ndarray, anchors: bool) -> np.ndarray:
        """Corrected scale index (uint8, (channels of slice j, n)) of slice ``j`` >= 1.

        ``symbols``, ``index``: (M, n), the n positions of one checkerboard half (``anchors``
        says which) in the latent's channel order; only the channels of slices before j are
        read from ``symbols``, only slice j's from ``index``."""
        layers = self.parts[j - 1]
        start, stop = self.edges[j]
        seen, own = self.order[:start], self.order[start:stop]
        n = symbols.shape[1]
        out = np.empty((stop - start, n), dtype=np.uint8)
        w_in, b_in = layers["anchors_in" if anchors else "others_in"]
        limit = float(1 << ACT_LIMIT_BITS)

        def chunk(a: int, b: int) -> None:
            q = clamp(symbols[seen, a:b], -CONTEXT_Q_LIMIT, CONTEXT_Q_LIMIT).astype(np.float64)
            x = np.concatenate([q, np.abs(q)])
            features = w_in @ x
            features *= 1 << ACT_BITS
            features += b_in[:, None]
            np.clip(rescale(features), 0.0, limit, out=features)
            steps = index[own, a:b].astype(np.int64)
            coordinate = (steps << ACT_BITS) // COORDINATE_DIVISOR      # index / 16, ACT units
            w_mix, b_mix = layers["mix"]
            hidden = w_mix @ np.concatenate([features, coordinate.astype(np.float64)])
            hidden += b_mix[:, None]
            np.clip(rescale(hidden), 0.0, limit, out=hidden)
            w_head, b_head = layers["head"]
            d = w_head @ hidden
            d += b_head[:, None]
            d = np.clip(rescale(d), -limit, limit).astype(np.int64)
            total = (steps << ACT_BITS) + d + (1 << (ACT_BITS - 1))     # round to a table step
            out[:, a:b] = clamp(total >> ACT_BITS, 0, SCALE_COUNT - 1)

        workers.run([partial(chunk, a, min(a + CHUNK_COLUMNS, n)) for a in range(0, n, CHUNK_COLUMNS)])
        return out
