"""The checkerboard context: exact integer arithmetic, faithful to the float model, used by the codec."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import formats
from neuralcodec.model.context import CheckerboardContext, anchor_mask
from neuralcodec.model.integer_context import (IntegerContext, export_context,
                                               non_anchor_mask)
from neuralcodec.model.integer_hyper import ACT_BITS, ACT_LIMIT_BITS, WEIGHT_BITS
from neuralcodec.model.network import CONTEXT_Q_LIMIT

from imagegen import natural_image

M, HIDDEN = 12, 8


def _random_context(seed: int) -> CheckerboardContext:
    torch.manual_seed(seed)
    ctx = CheckerboardContext(M, HIDDEN)
    with torch.no_grad():
        for p in ctx.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    return ctx


def _reference(arrays: dict, symbols: np.ndarray, coordinate: np.ndarray):
    """The integer network written plainly in Python int64 (full 3x3 taps over masked anchors)."""
    m, rows, cols = symbols.shape
    anchors = ~non_anchor_mask(rows, cols)
    q = np.clip(symbols, -CONTEXT_Q_LIMIT, CONTEXT_Q_LIMIT).astype(np.int64) * anchors
    a = np.concatenate([q, np.abs(q)]) << ACT_BITS
    padded = np.pad(a, ((0, 0), (1, 1), (1, 1)))
    acc = np.zeros_like(a)
    for dy in range(3):
        for dx in range(3):
            acc += arrays["neighbours"][:, dy, dx, None, None] * padded[:, dy:dy + rows, dx:dx + cols]
    limit = 1 << ACT_LIMIT_BITS

    def rescale(x):
        return (x + (1 << (WEIGHT_BITS - 1))) >> WEIGHT_BITS   # floor(x / 2**12 + 1/2)

    features = np.clip(rescale(acc), -limit, limit)
    coord = np.clip(coordinate.astype(np.int64) // 16, -limit, limit)
    stacked = np.concatenate([features, coord]).reshape(3 * m, -1)
    hidden = np.clip(rescale(arrays["mix_weight"] @ stacked + arrays["mix_bias"][:, None]), 0, limit)
    out = np.clip(rescale(arrays["head_weight"] @ hidden + arrays["head_bias"][:, None]), -limit, limit)
    out = out.reshape(2 * m, rows, cols) * ~anchors
    return out[:m], out[m:]


@pytest.mark.parametrize("strip", [2, 4, 32])
def test_integer_context_equals_a_plain_int64_reference_in_any_strip_size(monkeypatch, strip):
    import neuralcodec.model.integer_context as ic

    arrays = export_context(_random_context(0))
    rng = np.random.default_rng(1)
    symbols = rng.integers(-40, 41, (M, 12, 8))
    symbols[0, 0, 0], symbols[1, 2, 2] = 10 ** 6, -10 ** 6       # beyond the clip
    coordinate = rng.integers(-3000, 20000, (M, 12, 8))
    monkeypatch.setattr(ic, "STRIP_ROWS", strip)
    d_mean, d_coord = IntegerContext(arrays)(symbols, coordinate)
    ref_mean, ref_coord = _reference(arrays, symbols, coordinate)
    assert np.array_equal(d_mean, ref_mean) and np.array_equal(d_coord, ref_coord)
    assert d_coord.any()


def test_integer_context_follows_the_float_model():
    ctx = _random_context(3).eval()
    rng = np.random.default_rng(4)
    symbols = rng.integers(-5, 6, (M, 8, 12))
    coordinate = rng.integers(0, 64 << ACT_BITS, (M, 8, 12))
    d_mean, d_coord = IntegerContext(export_context(ctx))(symbols, coordinate)
    with torch.no_grad():
        a = anchor_mask(8, 12)
        f_mean, f_coord = ctx(torch.from_numpy(symbols).float()[None] * a,
                              torch.from_numpy(coordinate).float()[None] / (1 << ACT_BITS))
    others = non_anchor_mask(8, 12)
    scale = float(f_coord.abs().max())
    assert np.abs(d_coord / (1 << ACT_BITS) - f_coord[0].numpy())[:, others].max() < 0.01 * scale + 0.05
    assert np.abs(d_mean / (1 << ACT_BITS) - f_mean[0].numpy())[:, others].max() < 0.01 * scale + 0.05


def test_an_untrained_context_changes_nothing():
    ctx = CheckerboardContext(M, HIDDEN)
    d_mean, d_coord = IntegerContext(export_context(ctx))(np.ones((M, 4, 4), dtype=np.int64),
                                                          np.full((M, 4, 4), 5000))
    assert not d_mean.any() and not d_coord.any()


def test_the_shipped_model_codes_the_two_halves_in_two_sections(codec):
    from neuralcodec.model.integer_hyper import index_from_total, quality_offset

    assert codec.context is not None
    data = codec.compress(natural_image(64, 96, seed=2), quality=40)
    header, sections = formats.unpack(data)
    assert {"YSYM", "YSYN"} <= set(sections)
    # anchors use the hyperprior's tables, the others the context's corrections of them
    _, _, z, _, _, index = codec.decode_latents(data)
    _, coordinate = codec.hyper(z)
    plain = index_from_total(coordinate + quality_offset(codec.weights.gain_offsets, 4000)[:, None, None])
    others = non_anchor_mask(*index.shape[1:])
    # (with channel slices, only the first slice's anchors keep the hyperprior's tables)
    first = codec.slices.channels()[0] if codec.slices else slice(None)
    assert np.array_equal(index[first][:, ~others], plain[first][:, ~others])
    assert not np.array_equal(index[first][:, others], plain[first][:, others])
    without = dict(sections)
    del without["YSYN"]
    with pytest.raises(formats.VaezError, match="YSYN"):
        codec.decompress(formats.pack(header, without))


def test_checkerboard_halves_are_the_mask_order_and_invert():
    """The strided halves are exactly the boolean-mask gathers the format is defined by."""
    from neuralcodec.model.integer_context import checkerboard_half, set_checkerboard_half

    a = np.random.default_rng(0).integers(-50, 50, (3, 8, 12))
    others = non_anchor_mask(8, 12)
    rebuilt = np.zeros_like(a)
    for second, mask in ((False, ~others), (True, others)):
        half = checkerboard_half(a, second)
        assert half.shape == (3, 8, 6) and np.array_equal(half.ravel(), a[:, mask].ravel())
        set_checkerboard_half(rebuilt, second, half)
    assert np.array_equal(rebuilt, a)
