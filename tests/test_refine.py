"""Encoder effort (``neuralcodec.refine``): smaller files for the same decoder, never a different format."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import neuralcodec
from neuralcodec import refine
from neuralcodec.model.integer_context import non_anchor_mask
from neuralcodec.model.quality import lambda_at, level_from_quality

from imagegen import natural_image


def _objective(codec, image: np.ndarray, data: bytes, quality: float) -> float:
    """bits per pixel + lambda * 255^2 * MSE of a file: what the refinement lowers."""
    decoded = np.asarray(codec.decompress(data)).astype(np.float64) / 255
    mse = np.mean((decoded - image.astype(np.float64) / 255) ** 2)
    lam = float(lambda_at(torch.tensor(level_from_quality(quality))))
    return 8 * len(data) / (image.shape[0] * image.shape[1]) + lam * 65025 * mse


@pytest.mark.parametrize("quality", [20, 80])
def test_effort_lowers_the_rate_distortion_cost_and_decodes_normally(codec, quality):
    image = natural_image(96, 128, seed=5)
    plain = codec.compress(image, quality=quality, effort=0)
    refined = codec.compress(image, quality=quality, effort=2)
    assert refined != plain
    assert codec.decompress(refined).size == (128, 96)
    # the file is decoded by the unchanged decoder; the cost it was optimised for went down
    assert _objective(codec, image, refined, quality) < _objective(codec, image, plain, quality)
    # same z, so the same hyperprior tables at the anchors (the context may re-pick the
    # others' tables from the refined anchors): only the y symbols are chosen differently
    a, b = codec.decode_latents(plain), codec.decode_latents(refined)
    anchors = ~non_anchor_mask(*a[5].shape[1:])
    assert np.array_equal(a[2], b[2]) and np.array_equal(a[5][:, anchors], b[5][:, anchors])
    assert not np.array_equal(a[3], b[3])


def test_effort_is_deterministic_and_works_with_both_coders(codec):
    image = natural_image(40, 56, seed=2)
    first = codec.compress(image, quality=50, effort=1, coder="constriction")
    assert first == codec.compress(image, quality=50, effort=1, coder="constriction")
    huff = codec.compress(image, quality=50, effort=1, coder="huffman")
    assert np.array_equal(codec.decode_latents(first)[3], codec.decode_latents(huff)[3])


@pytest.mark.parametrize("bad", [-1, 4, 1.5, "2", True, None])
def test_bad_effort_is_refused(codec, bad):
    with pytest.raises(ValueError, match="effort"):
        codec.compress(natural_image(16, 16), effort=bad)


def test_windows_cover_the_whole_latent_and_leave_the_input_alone(codec, monkeypatch):
    """Small windows (as on big images) still refine every part and never touch the input."""
    image = natural_image(80, 112, seed=9)
    plain = codec.compress(image, quality=60, effort=0)
    header, _, _, symbols, mean, index = codec.decode_latents(plain)
    before = symbols.copy()
    monkeypatch.setattr(refine, "WINDOW", 4)
    lam = float(lambda_at(torch.tensor(level_from_quality(60))))
    energy = refine.impulse_energy(codec.net.synthesis, symbols.shape[0])
    out = refine.refine(codec.net.synthesis, image, symbols, mean, index,
                        codec._gain(60, decoder=True), lam, 1, energy,
                        refine.symbol_bits(codec.weights.y_tables))
    assert np.array_equal(symbols, before)
    changed = np.argwhere((out != symbols).any(axis=0))
    assert changed.size
    # moves land in every quarter of the latent, not just the first window
    rows, cols = symbols.shape[1:]
    quarters = {(r * 2 // rows, c * 2 // cols) for r, c in changed}
    assert quarters == {(0, 0), (0, 1), (1, 0), (1, 1)}


def test_api_and_pillow_pass_effort_through(tmp_path):
    image = natural_image(32, 48, seed=4)
    assert neuralcodec.compress(image, quality=40, effort=0) != neuralcodec.compress(image, quality=40)
    assert neuralcodec.compress(image, quality=40) == neuralcodec.compress(
        image, quality=40, effort=refine.DEFAULT_EFFORT)
    from PIL import Image

    path = tmp_path / "x.vaez"
    Image.fromarray(image).save(path, effort=2, quality=40)
    assert path.read_bytes() == neuralcodec.compress(image, quality=40, effort=2)


def test_rate_aware_rounding_moves_only_towards_zero_and_only_when_it_pays():
    tables = neuralcodec.Codec().weights.y_tables
    bits = refine.magnitude_bits(tables)
    # magnitude 0 is the cheapest symbol of every table; escapes are infinitely priced here
    assert np.all(bits[:, 0] <= bits[:, 1]) and np.isinf(bits[0, -1])
    rng = np.random.default_rng(0)
    value = rng.normal(0, 3, (8, 6, 5))
    index = rng.integers(0, len(tables), value.shape)
    plain = np.round(value).astype(np.int64)
    # a prohibitive distortion price: plain rounding
    assert np.array_equal(refine.rate_aware_round(value, index, bits, np.full((8, 1, 1), 1e9)), plain)
    free = refine.rate_aware_round(value, index, bits, np.zeros((8, 1, 1)))
    moved = free != plain
    # free distortion: every symbol whose smaller magnitude is cheaper moves, by one step,
    # towards zero; zeros and symbols whose table would need an escape stay
    assert moved.any()
    assert np.all(np.abs(free - plain) <= 1) and np.all(np.abs(free) <= np.abs(plain))
    assert not np.any(moved & (plain == 0))
    idx = np.minimum(np.abs(plain), bits.shape[1] - 1)
    coded = np.isfinite(bits[index, idx])           # not escaped
    assert not coded.all()
    cheaper = coded & (idx >= 1) & (bits[index, idx] > bits[index, np.maximum(idx - 1, 0)])
    assert np.array_equal(moved, cheaper)
    # in between, a symbol moves when the bits saved beat the price of the larger error
    cost = np.full((8, 1, 1), 2.0)
    some = refine.rate_aware_round(value, index, bits, cost)
    with np.errstate(invalid="ignore"):
        saved = bits[index, idx] - bits[index, np.maximum(idx - 1, 0)]
    added = 2.0 * (1 - 2 * np.sign(plain) * (plain - value))
    assert np.array_equal(some != plain, cheaper & (saved > added))


def test_rate_aware_rounding_changes_symbols_not_the_format(codec):
    """The default encoder's rounding spends fewer bits than plain rounding; both files decode
    with the same decoder, and the anchors (hyperprior tables only) differ by at most a step
    towards zero."""
    image = natural_image(96, 128, seed=7)
    strength = codec.rounding_strength
    try:
        codec.rounding_strength = 0
        plain = codec.compress(image, quality=30, effort=0)
        codec.rounding_strength = 8.0
        rate_aware = codec.compress(image, quality=30, effort=0)
    finally:
        codec.rounding_strength = strength
    assert len(rate_aware) < len(plain)
    a, b = codec.decode_latents(plain), codec.decode_latents(rate_aware)
    anchors = ~non_anchor_mask(*a[3].shape[1:])
    qa, qb = a[3][:, anchors], b[3][:, anchors]
    assert np.array_equal(a[2], b[2]) and not np.array_equal(qa, qb)
    assert np.all(np.abs(qa - qb) <= 1) and np.all(np.abs(qb) <= np.abs(qa))
    assert codec.decompress(rate_aware).size == (128, 96)


def test_rate_aware_rounding_takes_any_layout_and_leaves_non_finite_values_alone():
    bits = refine.magnitude_bits(neuralcodec.Codec().weights.y_tables)
    rng = np.random.default_rng(1)
    value = rng.normal(0, 3, (5, 6, 7))
    index = rng.integers(0, bits.shape[0], value.shape)
    cost = np.full((5, 1, 1), 0.5)
    expected = refine.rate_aware_round(value, index, bits, cost)
    assert not np.array_equal(expected, np.round(value))     # some symbols moved
    # the same numbers in Fortran order, or as a transposed view, give the same symbols
    fortran = refine.rate_aware_round(np.asfortranarray(value), np.asfortranarray(index), bits, cost)
    assert np.array_equal(fortran, expected)
    swapped = refine.rate_aware_round(value.transpose(0, 2, 1), index.transpose(0, 2, 1), bits, cost)
    assert np.array_equal(swapped, expected.transpose(0, 2, 1))
    # NaN and inf are not moved (and do not crash the table look-up); the rest still are
    odd = value.copy()
    odd[0, 0, :3] = (np.nan, np.inf, -np.inf)
    with np.errstate(invalid="ignore"):          # NaN to int64, as plain rounding does
        out = refine.rate_aware_round(odd, index, bits, cost)
    assert np.array_equal(out[1:], expected[1:])
    assert np.array_equal(refine.rate_aware_round(np.zeros((2, 0, 3)), np.zeros((2, 0, 3), int),
                                                  bits, cost[:2]), np.zeros((2, 0, 3)))


def test_symbol_bits_are_the_coders_code_lengths():
    """The refinement prices moves with the exact code lengths of the coder's tables (the
    ones `inspect_panel.symbol_bits` reads off the tables too); escapes are never a target."""
    from neuralcodec.inspect_panel import symbol_bits as coded_bits

    tables = neuralcodec.Codec().weights.y_tables
    limit = 20
    bits = refine.symbol_bits(tables, limit)
    values = np.arange(-limit, limit + 1)
    for s in (0, len(tables) // 2, len(tables) - 1):
        expected = coded_bits(values, np.full(values.shape, s), tables)
        finite = np.isfinite(bits[s])
        assert finite.any()
        if s == 0:                  # the narrowest table escapes all but a few symbols
            assert not finite.all()
        np.testing.assert_allclose(bits[s, finite], expected[finite], rtol=1e-9)
        assert np.all(expected[~finite] > bits[s, finite].max())   # escaped: dearer than any
    assert np.array_equal(refine.magnitude_bits(tables, limit), bits[:, limit:])


def test_refinement_in_float32_also_pays(codec, monkeypatch):
    """Where the hardware has no native bfloat16 the passes run in float32: same decoder,
    and still a lower cost than no pass."""
    monkeypatch.setattr(type(codec), "_fast_dtype", lambda self: None)
    image = natural_image(64, 96, seed=11)
    plain = codec.compress(image, quality=50, effort=0)
    refined = codec.compress(image, quality=50, effort=1)
    assert refined != plain
    assert _objective(codec, image, refined, 50) < _objective(codec, image, plain, 50)


def test_refinement_leaves_symbols_beyond_the_priced_range_alone(codec):
    """Huge symbols (beyond `BITS_LIMIT`, or escaped) in any table, the widest included, are
    kept as they are; the others may still move."""
    image = natural_image(64, 64, seed=12)
    header, _, _, symbols, mean, index = codec.decode_latents(codec.compress(image, quality=90, effort=0))
    symbols = symbols.copy()
    index = index.copy()
    big = refine.BITS_LIMIT
    symbols[:4, :, :] = np.array([big, -big, big + 7, -(big + 40)])[:, None, None]
    index[:4] = len(codec.weights.y_tables) - 1
    lam = float(lambda_at(torch.tensor(level_from_quality(90))))
    energy = refine.impulse_energy(codec.net.synthesis, symbols.shape[0])
    out = refine.refine(codec.net.synthesis, image, symbols, mean, index,
                        codec._gain(90, decoder=True), lam, 1, energy,
                        refine.symbol_bits(codec.weights.y_tables))
    assert np.array_equal(out[:4], symbols[:4])
    assert not np.array_equal(out[4:], symbols[4:])


def test_default_effort_works_under_inference_mode(codec):
    """Callers often wrap torch work in inference_mode; the refinement needs gradients anyway."""
    image = natural_image(32, 48, seed=13)
    with torch.inference_mode():
        inside = codec.compress(image, quality=50)
    assert inside == codec.compress(image, quality=50)


def test_fast_passes_follow_the_hardware_and_pay_in_bfloat16(codec, monkeypatch):
    """bfloat16 passes exactly where the CPU computes bfloat16 natively; forced on, they
    still lower the cost (on other CPUs emulated: slower, same choices to rounding)."""
    import platform

    if platform.machine().lower() in ("x86_64", "amd64"):
        native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        assert (codec._fast_dtype() is torch.bfloat16) == bool(native)
    monkeypatch.setattr(type(codec), "_fast_dtype", lambda self: torch.bfloat16)
    image = natural_image(64, 96, seed=14)
    plain = codec.compress(image, quality=50, effort=0)
    refined = codec.compress(image, quality=50, effort=1)
    assert refined != plain
    assert _objective(codec, image, refined, 50) < _objective(codec, image, plain, 50)


def test_the_post_filter_correction_is_taken_once_per_round_and_window(codec, monkeypatch):
    """The post-filter enters the passes as a constant correction, computed on the first pass
    of each round in each window (two phases with a context: one call per round); a filter
    that shifts the pixels changes which moves pay."""
    image = natural_image(64, 96, seed=11)
    header, _, _, symbols, mean, index = codec.decode_latents(codec.compress(image, quality=50, effort=0))
    lam = float(lambda_at(torch.tensor(level_from_quality(50))))
    energy = refine.impulse_energy(codec.net.synthesis, symbols.shape[0])
    args = (image, symbols, mean, index, codec._gain(50, decoder=True), lam)
    others = non_anchor_mask(*symbols.shape[1:])
    calls = []

    def brighter(x):
        calls.append(tuple(x.shape))
        return x + 0.05

    plain = refine.refine(codec.net.synthesis, *args, 2, energy, refine.symbol_bits(codec.weights.y_tables),
                          positions=others)
    shifted = refine.refine(codec.net.synthesis, *args, 2, energy, refine.symbol_bits(codec.weights.y_tables),
                            positions=others, postfilter=brighter)
    assert len(calls) == 2 and calls[0] == (1, 3, 64, 96)
    assert not np.array_equal(plain, shifted)
    monkeypatch.setattr(refine, "WINDOW", 4)          # 8 x 12 latents: 2 x 3 windows
    calls.clear()
    refine.refine(codec.net.synthesis, *args, 1, energy, refine.symbol_bits(codec.weights.y_tables),
                  positions=others, postfilter=brighter)
    assert len(calls) == 2 * 3
