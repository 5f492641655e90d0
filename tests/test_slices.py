"""Channel slices: exact integer arithmetic, faithful to the float model, coded in pieces."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import formats
from neuralcodec.codec import Codec
from neuralcodec.model.constants import CONTEXT_Q_LIMIT, SCALE_COUNT
from neuralcodec.model.fixed_point import ACT_BITS, ACT_LIMIT_BITS, WEIGHT_BITS
from neuralcodec.model.integer_context import non_anchor_mask
from neuralcodec.model.integer_slices import IntegerSlices, export_slices
from neuralcodec.model.slices import ChannelSlices

from imagegen import natural_image

M = 24
BOUNDS = (2, 5, 11)


def _random_slices(seed: int, channels: int = M, bounds=BOUNDS, hidden: int = 8) -> ChannelSlices:
    torch.manual_seed(seed)
    module = ChannelSlices(torch.randperm(channels), bounds, hidden)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return module.eval()


def _reference(arrays: dict, j: int, symbols: np.ndarray, index: np.ndarray, anchors: bool):
    """Slice j's new index written plainly in Python-sized int64 arithmetic."""
    order, bounds = arrays["order"], [0] + arrays["bounds"].tolist() + [len(arrays["order"])]
    seen, own = order[:bounds[j]], order[bounds[j]:bounds[j + 1]]
    limit = 1 << ACT_LIMIT_BITS

    def rescale(x):
        return (x + (1 << (WEIGHT_BITS - 1))) >> WEIGHT_BITS

    q = np.clip(symbols[seen], -CONTEXT_Q_LIMIT, CONTEXT_Q_LIMIT).astype(np.int64)
    x = np.concatenate([q, np.abs(q)])
    name = "anchors_in" if anchors else "others_in"
    features = np.clip(rescale((arrays[f"{j}/{name}_weight"] @ x << ACT_BITS)
                               + arrays[f"{j}/{name}_bias"][:, None]), 0, limit)
    steps = index[own].astype(np.int64)
    stacked = np.concatenate([features, (steps << ACT_BITS) // 16])
    hidden = np.clip(rescale(arrays[f"{j}/mix_weight"] @ stacked + arrays[f"{j}/mix_bias"][:, None]), 0, limit)
    d = np.clip(rescale(arrays[f"{j}/head_weight"] @ hidden + arrays[f"{j}/head_bias"][:, None]), -limit, limit)
    return np.clip(((steps << ACT_BITS) + d + (1 << (ACT_BITS - 1))) >> ACT_BITS, 0, SCALE_COUNT - 1)


@pytest.mark.parametrize("chunk", [3, 64, 8192])
def test_integer_slices_equal_a_plain_int64_reference_in_any_chunk_size(monkeypatch, chunk):
    import neuralcodec.model.integer_slices as module

    arrays = export_slices(_random_slices(0))
    rng = np.random.default_rng(1)
    symbols = rng.integers(-40, 41, (M, 50))
    symbols[0, 0], symbols[1, 3] = 10 ** 9, -10 ** 9           # beyond the clip
    index = rng.integers(0, SCALE_COUNT, (M, 50)).astype(np.uint8)
    monkeypatch.setattr(module, "CHUNK_COLUMNS", chunk)
    slices = IntegerSlices(arrays, M)
    changed = 0
    for j in range(1, len(BOUNDS) + 1):
        for anchors in (True, False):
            got = slices.index(j, symbols, index, anchors)
            assert got.dtype == np.uint8
            assert np.array_equal(got, _reference(arrays, j, symbols, index, anchors))
            changed += int((got != index[slices.channels()[j]]).sum())
    assert changed


def test_integer_slices_follow_the_float_model():
    module = _random_slices(3)
    rng = np.random.default_rng(4)
    symbols = rng.integers(-5, 6, (M, 8, 12))
    index = rng.integers(0, SCALE_COUNT, (M, 8, 12)).astype(np.uint8)
    with torch.no_grad():
        anchors = torch.from_numpy((~non_anchor_mask(8, 12)).astype(np.float32))[None, None]
        float_index = np.round(index + module(torch.from_numpy(symbols).float()[None],
                                              torch.from_numpy(index).float()[None], anchors)[0].numpy())
    float_index = np.clip(float_index, 0, SCALE_COUNT - 1)
    slices = IntegerSlices(export_slices(module), M)
    others = non_anchor_mask(8, 12)
    agree = []
    for second, mask in ((False, ~others), (True, others)):
        q, t = symbols[:, mask], index[:, mask]
        for j, own in enumerate(slices.channels()[1:], start=1):
            agree.append(slices.index(j, q, t, anchors=not second) == float_index[:, mask][own])
    agree = np.concatenate([a.ravel() for a in agree])
    assert agree.mean() > 0.97          # rounding ties may fall either way, nothing more


def test_untrained_slices_change_nothing_and_bad_arrays_are_refused():
    arrays = export_slices(ChannelSlices(torch.randperm(M), BOUNDS, 8))
    slices = IntegerSlices(arrays, M)
    index = np.random.default_rng(0).integers(0, SCALE_COUNT, (M, 30)).astype(np.uint8)
    for j, own in enumerate(slices.channels()[1:], start=1):
        assert np.array_equal(slices.index(j, np.ones((M, 30), dtype=np.int64), index, True), index[own])
    with pytest.raises(ValueError, match="permutation"):
        IntegerSlices({**arrays, "order": np.zeros(M, dtype=np.int64)}, M)
    with pytest.raises(ValueError, match="shapes"):
        IntegerSlices({**arrays, "1/mix_weight": arrays["1/mix_weight"][:, 1:]}, M)
    with pytest.raises(ValueError, match="out of range"):
        IntegerSlices({**arrays, "2/head_weight": arrays["2/head_weight"] + (1 << 30)}, M)
    with pytest.raises(ValueError, match="bounds"):
        ChannelSlices(torch.randperm(M), (5, 3))
    with pytest.raises(ValueError, match="bounds"):
        IntegerSlices({**arrays, "bounds": np.zeros(0, dtype=np.int64)}, M)


def _renamed(weights, model_id, slices, decodes=()):
    return dataclasses.replace(weights, model_id=model_id, slices=slices,
                               meta={**weights.meta, "model_id": model_id, "decodes": list(decodes)})


@pytest.fixture(scope="module")
def plain(codec):
    """The shipped transforms and context without channel slices."""
    return Codec(_renamed(codec.weights, "vaez-plain", None))


@pytest.fixture(scope="module")
def sliced(plain):
    """The same with random channel slices, under a model id that also decodes
    ``plain``'s files (without slices)."""
    module = _random_slices(5, plain.weights.config["latent_channels"], (8, 16, 32, 64), 16)
    with torch.no_grad():
        for part in module.parts:
            part["head"].weight.mul_(0.2)
    old = {"model_id": plain.model_id, "digest": plain.weights.digest.hex()}
    return Codec(_renamed(plain.weights, "vaez-sliced", export_slices(module), [old]))


@pytest.mark.parametrize("coder", ["constriction", "huffman"])
def test_slices_change_tables_never_symbols_or_pixels(plain, sliced, coder):
    image = natural_image(72, 104, seed=6)
    # effort 0: the symbols do not depend on the tables (above it the refinement prices its
    # moves with the slices' tables, so it may pick other symbols)
    without = plain.compress(image, quality=55, coder=coder, effort=0)
    with_slices = sliced.compress(image, quality=55, coder=coder, effort=0)
    _, _, _, symbols, _, index = plain.decode_latents(without)
    _, _, _, sliced_symbols, _, sliced_index = sliced.decode_latents(with_slices)
    assert np.array_equal(symbols, sliced_symbols)
    first = sliced.slices.channels()[0]
    assert np.array_equal(index[first], sliced_index[first])      # slice 0 keeps its tables
    assert (index != sliced_index).mean() > 0.05
    assert np.array_equal(np.asarray(plain.decompress(without)), np.asarray(sliced.decompress(with_slices)))
    # the earlier model's files still decode, without slices; the other way round is refused
    assert np.array_equal(np.asarray(sliced.decompress(without)), np.asarray(plain.decompress(without)))
    with pytest.raises(ValueError, match="vaez-sliced"):
        plain.decompress(with_slices)
    refined = sliced.compress(image, quality=55, coder=coder)      # default effort
    assert sliced.decompress(refined).size == (104, 72)


@pytest.mark.parametrize("coder", ["constriction", "huffman"])
def test_a_sliced_stream_cut_or_changed_is_a_clear_error(sliced, coder):
    data = sliced.compress(natural_image(40, 64, seed=7), quality=70, coder=coder)
    header, sections = formats.unpack(data)
    for name in ("YSYM", "YSYN"):
        for cut in (len(sections[name]) // 2, len(sections[name]) - 1, 5):
            broken = dict(sections)
            broken[name] = sections[name][:cut]
            with pytest.raises(formats.VaezError, match="corrupt latent stream|checksum"):
                sliced.decompress(formats.pack(header, broken))
        broken = dict(sections)
        broken[name] = b"\x07" + sections[name][1:]          # another escape count
        with pytest.raises(formats.VaezError, match="corrupt latent stream|checksum"):
            sliced.decompress(formats.pack(header, broken))


def test_the_shipped_model_s_own_files_keep_decoding():
    """A file vaez 1.5 wrote with vaez-ls5 (slices in both halves): it decodes only if the
    slice arithmetic and the piece layout are unchanged (the symbol checksum is verified)."""
    from pathlib import Path

    import neuralcodec

    data = (Path(__file__).parent / "data" / "vaez-ls5-40x56-q60.vaez").read_bytes()
    header, _ = formats.unpack(data)
    assert header.model_id == "vaez-ls5" and neuralcodec.codec.default_codec().slices is not None
    decoded = np.asarray(neuralcodec.decompress(data)).astype(np.float64)
    original = natural_image(40, 56, seed=11).astype(np.float64)
    assert 10 * np.log10(255 ** 2 / ((decoded - original) ** 2).mean()) > 29.0


def test_integer_slices_stay_exact_at_their_limits():
    """Weights at 2**18, biases at 2**40, inputs at the clip: still equal to int64 arithmetic."""
    from neuralcodec.model.integer_slices import BIAS_LIMIT_BITS, WEIGHT_LIMIT_BITS

    arrays = export_slices(_random_slices(8))
    rng = np.random.default_rng(9)
    for key, value in arrays.items():
        if key.endswith("_weight"):
            arrays[key] = rng.choice([-1, 1], value.shape) << WEIGHT_LIMIT_BITS
        elif key.endswith("_bias"):
            arrays[key] = rng.choice([-1, 1], value.shape) << BIAS_LIMIT_BITS
    symbols = rng.choice([-CONTEXT_Q_LIMIT, CONTEXT_Q_LIMIT], (M, 40))
    index = rng.integers(0, SCALE_COUNT, (M, 40)).astype(np.uint8)
    slices = IntegerSlices(arrays, M)
    for j in range(1, len(BOUNDS) + 1):
        for anchors in (True, False):
            assert np.array_equal(slices.index(j, symbols, index, anchors),
                                  _reference(arrays, j, symbols, index, anchors))
    with pytest.raises(ValueError, match="out of range"):
        IntegerSlices({**arrays, "1/mix_bias": arrays["1/mix_bias"] * 2}, M)


def test_slices_train_on_frozen_latents_and_export_into_weights(tmp_path):
    """``python -m neuralcodec.train_slices`` then ``export --slices``: a model that decodes
    its own files with slices and the shipped model's files without."""
    from PIL import Image

    from neuralcodec import export, train_slices
    from neuralcodec.weights import WEIGHTS_DIR

    from pathlib import Path

    from neuralcodec.train import is_validation

    photos = tmp_path / "photos"
    photos.mkdir()
    names = [Path(f"p{i}.png") for i in range(200) if not is_validation(Path(f"p{i}.png"), 0.05)]
    for side in (False, True):      # two photos each side of the recipe's own hold-out
        for k, name in enumerate([n for n in names if train_slices.held_out(n, 0.5) == side][:2]):
            Image.fromarray(natural_image(256, 288, seed=30 + k + 2 * side)).save(photos / name)
    out = tmp_path / "slices.pt"
    assert train_slices.main([str(photos), "--out", str(out), "--steps", "3", "--crops", "2",
                              "--eval-crops", "2", "--eval-fraction", "0.5", "--threads", "1"]) == 0
    saved = torch.load(out, weights_only=False)
    assert sorted(saved["order"].tolist()) == list(range(192)) and saved["bounds"] == [8, 16, 32, 64]
    transforms = WEIGHTS_DIR / "vaez-ls4-train.pt"      # the shipped model's float checkpoint
    plain = Codec(export.export(transforms, tmp_path / "plain.npz", "vaez-plain"))
    new = Codec(export.export(transforms, tmp_path / "new.npz", "vaez-test",
                              decodes=(tmp_path / "plain.npz",), slices=out))
    assert new.slices is not None and plain.slices is None
    image = natural_image(64, 64, seed=9)
    assert new.decompress(new.compress(image, quality=30)).size == (64, 64)
    old_file = plain.compress(image, quality=30)
    assert np.array_equal(np.asarray(new.decompress(old_file)), np.asarray(plain.decompress(old_file)))


def test_weights_with_slices_but_no_context_are_refused(plain):
    weights = dataclasses.replace(plain.weights, context=None,
                                  slices=export_slices(_random_slices(2, 192, (8, 16), 4)))
    with pytest.raises(ValueError, match="need a checkerboard context"):
        Codec(weights)
