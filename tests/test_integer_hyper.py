"""The integer hyper-synthesis must equal a pure int64 reference exactly (that is what makes
scale indexes agree on every machine), including in strips and blocks."""
from __future__ import annotations

import numpy as np

from neuralcodec.model.integer_hyper import (ACT_BITS, ACT_LIMIT_BITS, WEIGHT_BITS, Z_LIMIT,
                                             IntegerHyperSynthesis, scale_index)
from neuralcodec.weights import load_weights


def reference(layers, z: np.ndarray) -> np.ndarray:
    """Straightforward int64 convolution (numpy integer arithmetic, no floats)."""
    a = np.clip(z, -Z_LIMIT, Z_LIMIT).astype(np.int64) << ACT_BITS
    limit = 1 << ACT_LIMIT_BITS
    for i, (w, b, pad, shuffle) in enumerate(layers):
        w = w.astype(np.int64)
        k = w.shape[-1]
        padded = np.pad(a, ((0, 0), (pad, pad), (pad, pad)))
        h, wd = a.shape[1], a.shape[2]
        acc = np.zeros((w.shape[0], h, wd), dtype=np.int64) + b.astype(np.int64)[:, None, None]
        for dy in range(k):
            for dx in range(k):
                acc += np.einsum("oc,chw->ohw", w[:, :, dy, dx], padded[:, dy:dy + h, dx:dx + wd])
        a = (acc + (1 << (WEIGHT_BITS - 1))) >> WEIGHT_BITS       # floor(acc / 2^W + 1/2)
        if shuffle:
            c = a.shape[0] // 4
            a = a.reshape(c, 2, 2, h, wd).transpose(0, 3, 1, 4, 2).reshape(c, 2 * h, 2 * wd)
        a = np.clip(a, 0, limit) if i < len(layers) - 1 else np.clip(a, -limit, limit)
    return a


def test_integer_hyper_synthesis_matches_int64_reference():
    weights = load_weights()
    m = weights.config["latent_channels"]
    hyper = IntegerHyperSynthesis(weights.hyper_layers, m)
    rng = np.random.default_rng(0)
    z = rng.integers(-6, 7, size=(weights.config["hyper_channels"], 5, 7))
    z[0, 0, 0] = 10 ** 9                      # clamped to Z_LIMIT on both paths
    expected = reference(weights.hyper_layers, z)
    for strip_rows in (1, 2, 8):
        mean, coordinate = hyper(z, strip_rows=strip_rows)
        assert np.array_equal(coordinate, expected[m:])
        assert np.array_equal(mean * (1 << ACT_BITS), expected[:m].astype(np.float64))


def test_scale_index_interpolates_with_integers_only():
    offsets = np.array([[0, 256], [2560, -256]], dtype=np.int64)   # 2 levels, 2 channels
    coordinate = np.zeros((2, 1, 1), dtype=np.int64)
    assert scale_index(coordinate, offsets, 100).ravel().tolist() == [0, 1]       # quality 1
    assert scale_index(coordinate, offsets, 10000).ravel().tolist() == [10, 0]    # quality 100
    mid = scale_index(coordinate, offsets, 5050).ravel().tolist()                 # halfway
    assert mid == [5, 0]
