"""Tiled transforms: the receptive field comes from the modules, and tiles change nothing."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from imagegen import natural_image
from neuralcodec.model import ModelConfig, VaezNetwork
from neuralcodec.tiling import apply_tiled, footprint, integer_hyper_geometry

TRANSFORMS = ("analysis", "synthesis", "hyper_analysis")


@pytest.fixture(scope="module")
def random_net():
    """The real architecture with random, non-zero weights everywhere (the trained residual
    branches start at zero, which would hide a too-small halo), in float64 so that any
    difference between tiled and untiled is a halo error, not rounding."""
    torch.manual_seed(0)
    net = VaezNetwork(ModelConfig()).double().eval().requires_grad_(False)
    for p in net.parameters():
        fan_in = p[0].numel() if p.dim() > 1 else 1
        p.copy_(torch.randn_like(p) / fan_in ** 0.5)
    return net


def _input(net, name, rows, cols, seed):
    g = torch.Generator().manual_seed(seed)
    channels = {"analysis": 3}.get(name, net.config.latent_channels)
    return torch.rand(1, channels, rows, cols, generator=g, dtype=torch.float64)


def test_footprint_matches_the_hand_count(random_net):
    # g_a: 16x16 stride-8 window (padding 4), then 2 residual blocks with one 3x3 conv each
    fp = footprint(random_net.analysis)
    assert (fp.scale, fp.align) == (1 / 8, 8)
    assert fp.input_span(0, 10, 10) == (8 * (10 - 2) - 4, 8 * (10 + 2) - 4 + 15)
    # g_s: 3 residual blocks (one 3x3 each) + a 3x3 conv at latent resolution, PixelShuffle(8)
    fp = footprint(random_net.synthesis)
    assert (fp.scale, fp.align, fp.halo(0), fp.halo(1)) == (8, 1, (4, 4), (4, 4))
    # h_a: 3x3, then two 5x5 stride-2 convs
    fp = footprint(random_net.hyper_analysis)
    assert (fp.scale, fp.align) == (1 / 4, 4)


@pytest.mark.parametrize("name", TRANSFORMS)
def test_footprint_contains_the_true_receptive_field(random_net, name):
    """The gradient of one output position is zero outside the span the footprint predicts."""
    module = getattr(random_net, name)
    fp = footprint(module)
    size = {"analysis": 96, "synthesis": 12, "hyper_analysis": 24}[name]
    x = _input(random_net, name, size, size, seed=1).requires_grad_(True)
    with torch.enable_grad():
        out = module(x)
        r, c = out.shape[-2] // 2, out.shape[-1] // 2 + 1
        out[0, :, r, c].sum().backward()
    support = x.grad[0].abs().sum(0) != 0
    rows, cols = np.nonzero(support.numpy())
    lo_r, hi_r = fp.input_span(0, r, r)
    lo_c, hi_c = fp.input_span(1, c, c)
    assert lo_r <= rows.min() and rows.max() <= hi_r
    assert lo_c <= cols.min() and cols.max() <= hi_c
    # ... and it is tight: the support reaches the predicted edges (random weights, interior)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (lo_r, hi_r, lo_c, hi_c)


@pytest.mark.parametrize("name,rows,cols,core", [
    ("analysis", 96, 136, 5), ("analysis", 64, 40, 8), ("analysis", 8, 8, 1),
    ("synthesis", 11, 17, 48), ("synthesis", 5, 9, 8),
    ("hyper_analysis", 28, 36, 2), ("hyper_analysis", 12, 8, 1),
])
def test_tiled_equals_untiled_with_random_weights(random_net, name, rows, cols, core):
    module = getattr(random_net, name)
    x = _input(random_net, name, rows, cols, seed=rows * cols)
    whole = module(x)
    tiled = apply_tiled(module, x, core)
    assert tiled.shape == whole.shape
    assert float((tiled - whole).abs().max()) < 1e-4 * max(1.0, float(whole.abs().max()))


def test_unknown_operations_are_refused():
    class Blurry(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x):
            return nn.functional.interpolate(self.conv(x), scale_factor=2)

    with pytest.raises(NotImplementedError, match="interpolate"):
        footprint(Blurry())
    with pytest.raises(NotImplementedError, match="circular"):
        footprint(nn.Sequential(nn.Conv2d(3, 3, 3, padding=1, padding_mode="circular")))


def test_integer_hyper_tiles_are_exact(codec):
    assert integer_hyper_geometry(codec.weights.hyper_layers) == (3, 4)
    rng = np.random.default_rng(5)
    z = rng.integers(-6, 7, size=(codec.weights.config["hyper_channels"], 7, 9))
    mean, coordinate = codec.hyper(z, strip_rows=z.shape[1])     # one whole-z pass
    got_mean, got_coordinate = np.full_like(mean, np.nan), np.full_like(coordinate, -1)
    for rows, cols, m, c in codec._hyper_tiles(z, 2):
        got_mean[:, rows, cols], got_coordinate[:, rows, cols] = m, c
    assert np.array_equal(got_mean, mean) and np.array_equal(got_coordinate, coordinate)


def test_codec_tiled_matches_untiled(codec):
    """Forced 64-pixel tiles: the same symbols in the file, pixels within 1, no visible seams."""
    tile = 64
    img = natural_image(192, 256, seed=11)
    untiled = codec.compress(img, quality=75, tile_size=0)
    tiled = codec.compress(img, quality=75, tile_size=tile)
    _, _, z0, y0, _, index0 = codec.decode_latents(untiled)
    _, _, z1, y1, _, index1 = codec.decode_latents(tiled)
    assert np.array_equal(z0, z1) and np.array_equal(y0, y1) and np.array_equal(index0, index1)

    # the file does not know how it was made: decode each way
    ref = np.asarray(codec.decompress(tiled, tile_size=0)).astype(np.int32)
    out = np.asarray(codec.decompress(untiled, tile_size=tile)).astype(np.int32)
    assert out.shape == ref.shape == img.shape
    assert int(np.abs(out - ref).max()) <= 1

    # tile seams are no worse than the interior
    err = (out - img.astype(np.int32)) ** 2
    ref_err = (ref - img.astype(np.int32)) ** 2
    seam_rows = sorted({r for k in range(tile, img.shape[0], tile) for r in (k - 1, k)})
    seam_cols = sorted({c for k in range(tile, img.shape[1], tile) for c in (k - 1, k)})
    for axis, seams in ((0, seam_rows), (1, seam_cols)):
        tiled_mse = np.take(err, seams, axis=axis).mean()
        untiled_mse = np.take(ref_err, seams, axis=axis).mean()
        interior = np.delete(err, seams, axis=axis).mean()
        assert tiled_mse <= untiled_mse + 0.05
        assert tiled_mse <= 2 * interior


def test_tile_size_choice_and_validation(codec):
    from neuralcodec.codec import TILE_ABOVE_PIXELS, TILE_PIXELS

    assert codec._tile_core((192, 8, 8), None) == 0                      # small: untiled
    big = (192, 512, 768)                                                  # 6144 x 4096 pixels
    assert big[1] * big[2] * 64 > TILE_ABOVE_PIXELS
    assert codec._tile_core(big, None) == TILE_PIXELS
    assert codec._tile_core(big, 0) == 0 and codec._tile_core((192, 8, 8), 64) == 64
    for bad in (48, -32, True, 64.0):
        with pytest.raises(ValueError, match="tile_size"):
            codec.compress(natural_image(8, 8), tile_size=bad)
