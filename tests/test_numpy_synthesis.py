"""The CPU decoder's NumPy synthesis must match the torch `Synthesis` it was exported from
(to float32 rounding: one step of 255 at most), in any strip height, and decoding on the CPU
must not import torch at all."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from neuralcodec.model.network import ModelConfig, VaezNetwork
from neuralcodec.model.numpy_synthesis import NumpySynthesis

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def random_synthesis():
    """The real synthesis with random non-zero weights everywhere (the trained residual
    branches start at zero, which would hide a wrong tap or halo), small enough that the
    output is not all clipped."""
    torch.manual_seed(1)
    net = VaezNetwork(ModelConfig()).synthesis.eval().requires_grad_(False)
    for p in net.parameters():
        fan_in = p[0].numel() if p.dim() > 1 else 1
        p.copy_(torch.randn_like(p) / fan_in ** 0.5 * 0.5)
    net.to_blocks.bias.add_(0.5)
    params = {f"synthesis.{k}": v.numpy().astype(np.float16) for k, v in net.state_dict().items()}
    for k, v in net.state_dict().items():   # torch runs the same float16-rounded weights
        v.copy_(torch.from_numpy(params[f"synthesis.{k}"].astype(np.float32)))
    return net, NumpySynthesis(params, blocks=len(net.blocks))


def _torch_pixels(net, y):
    with torch.inference_mode():
        x = net(torch.from_numpy(y)[None])[0]
    return x.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def test_matches_torch_synthesis(random_synthesis):
    net, synthesis = random_synthesis
    y = np.random.default_rng(0).standard_normal((192, 7, 11)).astype(np.float32) * 0.3
    ref = _torch_pixels(net, y)
    assert ref.std() > 10 and ((ref == 0) | (ref == 255)).mean() < 0.5   # a real test signal
    out = np.zeros_like(ref)
    synthesis.render(y, out)
    diff = np.abs(out.astype(np.int32) - ref)
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01


@pytest.mark.parametrize("tile", [1, 2, 3, 5])
def test_tiles_and_crops_match_the_whole(random_synthesis, tile):
    net, synthesis = random_synthesis
    y = np.random.default_rng(tile).standard_normal((192, 9, 11)).astype(np.float32) * 0.3
    whole = np.zeros((72, 88, 3), np.uint8)
    synthesis.render(y, whole)
    cropped = np.zeros((67, 85, 3), np.uint8)     # odd image size: the decoder crops the padding
    synthesis.render(y, cropped, tile)             # tiles in both directions, with halos
    diff = np.abs(cropped.astype(np.int32) - whole[:67, :85])
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01


def test_rejects_an_unexpected_architecture(random_synthesis):
    _, synthesis = random_synthesis
    params = {"synthesis.to_blocks.weight": np.zeros((192, 192, 1, 1), np.float32),
              "synthesis.to_blocks.bias": np.zeros(192, np.float32)}
    with pytest.raises(ValueError, match="3x3"):
        NumpySynthesis(params, blocks=0)


def test_cli_decompress_does_not_import_torch(tmp_path, codec):
    rgb = np.random.default_rng(3).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    (tmp_path / "a.vaez").write_bytes(codec.compress(rgb, quality=50))
    script = (
        "import sys, cli\n"
        f"code = cli.main(['decompress', {str(tmp_path / 'a.vaez')!r}, '-o', {str(tmp_path / 'a.png')!r}])\n"
        "print('CODE', code, 'TORCH', 'torch' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "CODE 0 TORCH False" in proc.stdout
    from PIL import Image

    with Image.open(tmp_path / "a.png") as back:
        expected = np.asarray(codec.decompress((tmp_path / "a.vaez").read_bytes()))
        assert np.array_equal(np.asarray(back), expected)   # same pixels as the API, same machine


@pytest.mark.parametrize("core", [0, 64])
def test_gpu_path_synthesis_agrees_with_the_cpu_decoder(codec, core):
    """The torch synthesis the codec uses on a GPU (run here on the CPU, untiled and tiled)
    gives the NumPy decoder's pixels to within one step."""
    y_hat = (np.random.default_rng(4).standard_normal((192, 12, 16)) * 0.3).astype(np.float32)
    height, width = 93, 125        # cropped like an odd-sized image
    expected = np.zeros((height, width, 3), np.uint8)
    codec.synthesis.render(y_hat, expected, core // 8)
    got = codec._torch_synthesis(y_hat, height, width, core)
    diff = np.abs(got.astype(np.int32) - expected)
    assert got.shape == expected.shape and diff.max() <= 1 and (diff > 0).mean() < 0.01


def test_quality_gains_match_the_trained_module(codec):
    """The codec's NumPy gain interpolation equals `QualityGains` (which training used)."""
    from neuralcodec.model.constants import level_from_quality

    for quality in (1, 13.37, 50, 99.99, 100):
        level = torch.tensor([level_from_quality(quality)])
        for decoder, module in ((False, codec.net.gains.encoder_gain),
                                (True, codec.net.gains.decoder_gain)):
            expected = module(level)[0].double().numpy()
            np.testing.assert_allclose(codec._gain(quality, decoder), expected, rtol=1e-6)


def test_weights_lacking_synthesis_tensors_are_refused_clearly(codec):
    from dataclasses import replace

    from neuralcodec.codec import Codec

    params = {k: v for k, v in codec.weights.float_params.items() if k != "synthesis.to_blocks.bias"}
    with pytest.raises(ValueError, match="synthesis.to_blocks.bias"):
        Codec(replace(codec.weights, float_params=params))
