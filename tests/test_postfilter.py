"""The pixel post-filter: the NumPy decoder's version against the trained torch module, its
row strips, its start as the identity, and its place in the codec."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from imagegen import natural_image
import formats
import neuralcodec
from neuralcodec.codec import Codec
from neuralcodec.model import numpy_postfilter
from neuralcodec.model.constants import level_from_quality
from neuralcodec.model.numpy_postfilter import NumpyPostFilter
from neuralcodec.model.postfilter import PostFilter


def _random_filter(channels: int, scale: int, seed: int = 0) -> PostFilter:
    torch.manual_seed(seed)
    pf = PostFilter(channels, scale)
    with torch.no_grad():
        for p in pf.parameters():
            p.normal_(0.0, 0.1)
    return pf.eval()


def _params(pf: PostFilter) -> dict[str, np.ndarray]:
    return {"postfilter." + k: v.numpy() for k, v in pf.state_dict().items()}


def _torch_filtered(pf: PostFilter, image: np.ndarray, level: float) -> np.ndarray:
    with torch.no_grad():
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
        y = pf(x, torch.tensor([level])).clamp(0, 1).mul(255).round()
    return y[0].permute(1, 2, 0).numpy().astype(np.uint8)


@pytest.mark.parametrize("scale,shape,level", [(2, (70, 46), 0.0), (2, (200, 136), 3.3), (1, (45, 31), 7.0)])
def test_numpy_post_filter_matches_torch(scale, shape, level, monkeypatch):
    monkeypatch.setattr(numpy_postfilter, "TILE", 7)   # several tiles and halos both ways
    pf = _random_filter(8, scale)
    image = natural_image(*shape, seed=3)
    ours = NumpyPostFilter(_params(pf)).apply(image, level)
    reference = _torch_filtered(pf, image, level)
    assert ours.shape == image.shape and ours.dtype == np.uint8
    assert np.abs(ours.astype(int) - reference.astype(int)).max() <= 1
    assert (ours != image).mean() > 0.5           # the random filter really changes the image


def test_tiles_give_the_whole_image_result(monkeypatch):
    pf = NumpyPostFilter(_params(_random_filter(8, 2, seed=1)))
    image = natural_image(96, 70, seed=5)
    monkeypatch.setattr(numpy_postfilter, "TILE", 0)          # one pass over the whole image
    whole = pf.apply(image, 2.0)
    monkeypatch.setattr(numpy_postfilter, "TILE", 5)
    tiles = pf.apply(image, 2.0)
    assert np.abs(whole.astype(int) - tiles.astype(int)).max() <= 1
    assert (whole != tiles).mean() < 0.001


def test_untrained_filter_is_the_identity_and_input_is_kept():
    pf = NumpyPostFilter(_params(PostFilter(8, 2)))
    image = natural_image(32, 48, seed=2)
    before = image.copy()
    assert np.array_equal(pf.apply(image, 5.0), image)
    assert np.array_equal(image, before)


def test_refuses_bad_shapes():
    pf = NumpyPostFilter(_params(_random_filter(8, 2)))
    with pytest.raises(ValueError, match="multiples of 2"):
        pf.apply(natural_image(31, 32), 1.0)
    for name, shape in (("level_bias", (5,)), ("middle.bias", (7,)), ("last.weight", (12, 6, 3, 3)),
                        ("last.bias", (3,))):
        params = _params(_random_filter(8, 2))
        params["postfilter." + name] = np.zeros(shape, np.float32)
        with pytest.raises(ValueError, match="do not fit"):
            NumpyPostFilter(params)


def test_codec_output_is_the_filtered_synthesis():
    """The decoder's pixels are the post-filter applied to the synthesis' 8-bit image (rendered
    up to even sides, then cropped), at the file's quality level."""
    codec = Codec()
    assert codec.postfilter is not None
    image = natural_image(45, 61, seed=9)
    data = codec.compress(image, quality=30)
    decoded = np.asarray(codec.decompress(data))
    header, _, _, y_symbols, mean, _ = codec.decode_latents(data)
    y_hat = ((y_symbols + mean) * codec._gain(header.quality, decoder=True)).astype(np.float32)
    raw = np.empty((46, 62, 3), np.uint8)
    codec.synthesis.render(y_hat, raw)
    expected = codec.postfilter.apply(raw, level_from_quality(header.quality))[:45, :61]
    assert np.abs(decoded.astype(int) - expected.astype(int)).max() <= 1
    assert (raw[:45, :61] != expected).any()      # the shipped filter does change pixels


@pytest.mark.parametrize("model", ["vaez-ls2", "vaez-ls3", "vaez-ls4"])
def test_files_of_the_previous_models_still_decode(model):
    """vaez-ls3 is vaez-ls2 plus the post-filter, vaez-ls4 vaez-ls3 with the post-filter
    retrained and vaez-ls5 vaez-ls4 plus channel slices (used only in its own files), so
    their files decode to their latents (the header's symbol checksum is verified) and come
    out filtered."""
    data = (Path(__file__).parent / "data" / f"{model}-40x56-q60.vaez").read_bytes()
    header, _ = formats.unpack(data)
    # written by vaez 1.1 / 1.2 (version 1 container) and vaez 1.4 (version 2)
    assert header.model_id == model and header.version == (2 if model == "vaez-ls4" else 1)
    assert neuralcodec.codec.default_codec().model_id not in ("vaez-ls2", "vaez-ls3", "vaez-ls4")
    decoded = np.asarray(neuralcodec.decompress(data)).astype(np.float64)
    original = natural_image(40, 56, seed=11).astype(np.float64)   # what the file was made from
    assert decoded.shape == original.shape
    assert 10 * np.log10(255 ** 2 / ((decoded - original) ** 2).mean()) > 29.0


@pytest.mark.parametrize("decodes", ["vaez-ls2", [["vaez-ls2"]], [None], [{"model_id": "x", "digest": "zz"}],
                                     {"model_id": "vaez-ls2", "digest": "00" * 8}])
def test_malformed_decodes_metadata_is_refused_when_loading(tmp_path, decodes):
    import json

    from neuralcodec.weights import DEFAULT_WEIGHTS, load_weights

    with np.load(DEFAULT_WEIGHTS) as archive:
        arrays = {k: archive[k] for k in archive.files}
    meta = json.loads(bytes(arrays["meta"]).decode())
    meta["decodes"] = decodes
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(tmp_path / "w.npz", **arrays)
    with pytest.raises(ValueError, match="decodes"):
        load_weights(tmp_path / "w.npz")
