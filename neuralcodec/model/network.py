"""The whole mean-scale hyperprior network, as trained: transforms + hyperprior + quality gains.

This module knows nothing about bits on disk. `forward` is the training-time model (additive
noise stands in for rounding in the rate term, straight-through rounding feeds the decoder);
the codec (`neuralcodec/codec.py`) drives the same parts with hard rounding and the exported
integer hyper-synthesis.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from .context import CheckerboardContext, anchor_mask
from .postfilter import PostFilter
from .hyperprior import LOG_STEP, SCALE_MIN, FactorizedPrior, HyperAnalysis, HyperSynthesis, scale_from_coordinate
from .quality import QualityGains, lambda_at
from .transforms import Analysis, Synthesis

from .constants import CONTEXT_Q_LIMIT, PAD_MULTIPLE  # noqa: F401,E402


@dataclass(frozen=True)
class ModelConfig:
    latent_channels: int = 192
    hyper_channels: int = 96
    hidden: int = 128
    analysis_blocks: int = 2
    synthesis_blocks: int = 3
    context_hidden: int = 0      # width of the checkerboard context (0: hyperprior only)
    postfilter_channels: int = 0  # width of the pixel post-filter (0: none)
    postfilter_scale: int = 2     # its PixelUnshuffle factor

    def to_dict(self) -> dict:
        return asdict(self)


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


def gaussian_bin_probability(residual: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """P(|bin| around residual) under N(0, scale), computed in the flat tail for accuracy."""
    v = residual.abs()
    upper = torch.special.ndtr((0.5 - v) / scale)
    lower = torch.special.ndtr((-0.5 - v) / scale)
    return (upper - lower).clamp_min(1e-9)


class VaezNetwork(nn.Module):
    """g_a -> gain -> (h_a, prior, h_s) -> rounding -> inverse gain -> g_s (-> post-filter).

    The hyperprior sees the gain-free latent, so one set of hyper weights serves every quality;
    the quality gain only shifts the predicted log-scale and scales the predicted mean.
    """

    def __init__(self, config: ModelConfig = ModelConfig()):
        super().__init__()
        self.config = config
        m, c = config.latent_channels, config.hyper_channels
        self.analysis = Analysis(m, config.hidden, config.analysis_blocks)
        self.synthesis = Synthesis(m, config.hidden, config.synthesis_blocks)
        self.hyper_analysis = HyperAnalysis(m, c)
        self.hyper_synthesis = HyperSynthesis(m, c)
        self.prior = FactorizedPrior(c)
        self.gains = QualityGains(m)
        self.context = CheckerboardContext(m, config.context_hidden) if config.context_hidden else None
        self.postfilter = (PostFilter(config.postfilter_channels, config.postfilter_scale)
                           if config.postfilter_channels else None)
        self.autocast_dtype = None   # training only: run the transforms in e.g. torch.bfloat16

    def _transform(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Run a big transform, under mixed precision when `autocast_dtype` is set (the entropy
        model always stays in float32: its log-probabilities need the precision)."""
        if self.autocast_dtype is None:
            return module(x)
        with torch.autocast(device_type=x.device.type, dtype=self.autocast_dtype):
            return module(x).float()

    def predict(self, z_hat: torch.Tensor, level: torch.Tensor):
        """Mean and scale of the gained latent: the hyper-synthesis works in the gain-free
        domain and the gain enters additively in log-scale (float here; integer in the codec)."""
        mean_unit, coordinate_unit = self.hyper_synthesis(z_hat)
        gain = self.gains.encoder_gain(level)
        coordinate = coordinate_unit + torch.log(gain) / LOG_STEP
        return mean_unit * gain, scale_from_coordinate(coordinate)

    def entropy_parameters(self, y: torch.Tensor, z_hat: torch.Tensor, level: torch.Tensor,
                           hard: bool = False):
        """Mean and scale of every element of the gained latent ``y``, the checkerboard context
        included: anchors get the hyperprior's prediction, the other positions that prediction
        corrected from their anchor neighbours' symbols (rounded hard, or straight-through)."""
        mean_unit, coordinate_unit = self.hyper_synthesis(z_hat)
        gain = self.gains.encoder_gain(level)
        mean = mean_unit * gain
        coordinate = coordinate_unit + torch.log(gain) / LOG_STEP
        if self.context is not None:
            anchors = anchor_mask(y.shape[2], y.shape[3], y.device)
            residual = y - mean
            q = torch.round(residual) if hard else _round_ste(residual)
            q = q.clamp(-CONTEXT_Q_LIMIT, CONTEXT_Q_LIMIT) * anchors
            d_mean, d_coordinate = self.context(q, coordinate)
            others = 1.0 - anchors
            mean = mean + d_mean * others
            coordinate = coordinate + d_coordinate * others
        return mean, scale_from_coordinate(coordinate)

    def forward(self, x: torch.Tensor, level: torch.Tensor, rate_only: bool = False,
                hard_rate: bool = False) -> dict:
        """Training pass. x: (N, 3, H, W) in [0, 1], H and W multiples of 32; level: (N,).

        ``rate_only``: skip the synthesis; the loss is the rate alone (for training the
        entropy model on frozen transforms). ``hard_rate``: the rate of the rounded y and z
        (what a file pays; straight-through gradients) instead of the noisy-latent estimate."""
        y_unit = self._transform(self.analysis, x)
        gain = self.gains.encoder_gain(level)
        y = y_unit * gain
        z = self.hyper_analysis(y_unit)
        z_coded = _round_ste(z) if hard_rate else z + torch.empty_like(z).uniform_(-0.5, 0.5)
        z_bits = -torch.log2(self.prior.likelihood(z_coded)).sum(dim=(1, 2, 3))
        mean, scale = self.entropy_parameters(y, _round_ste(z), level)
        residual = (_round_ste(y - mean) if hard_rate
                    else y + torch.empty_like(y).uniform_(-0.5, 0.5) - mean)
        y_bits = -torch.log2(gaussian_bin_probability(residual, scale)).sum(dim=(1, 2, 3))
        pixels = x.shape[2] * x.shape[3]
        if rate_only:
            bpp = (y_bits + z_bits) / pixels
            return {"loss": bpp.mean(), "bpp": bpp, "mse": torch.zeros_like(bpp),
                    "y_bpp": y_bits / pixels, "z_bpp": z_bits / pixels}
        y_hat = _round_ste(y - mean) + mean
        x_hat = self._transform(self.synthesis, y_hat * self.gains.decoder_gain(level))
        if self.postfilter is not None:
            x_hat = self.postfilter(x_hat, level)
        bpp = (y_bits + z_bits) / pixels
        mse = ((x_hat - x) ** 2).mean(dim=(1, 2, 3))
        loss = (lambda_at(level) * 65025 * mse + bpp).mean()
        return {"loss": loss, "bpp": bpp, "mse": mse, "x_hat": x_hat,
                "y_bpp": y_bits / pixels, "z_bpp": z_bits / pixels}


@torch.no_grad()
def init_entropy_model(net: VaezNetwork, coefficient_std: torch.Tensor) -> None:
    """Start the hyperprior from the per-channel spread of the KLT coefficients.

    h_a's input is normalised per channel, and h_s's scale output starts at each channel's
    unconditional log-std, so rates are sensible from the first step.
    """
    std = coefficient_std.clamp_min(1e-4).to(net.hyper_analysis.input_scale.dtype)
    net.hyper_analysis.input_scale.copy_(1.0 / std)
    # z starts small (cheap to code); training grows it where side information pays off
    net.hyper_analysis.net[-1].weight.mul_(0.1)
    net.hyper_analysis.net[-1].bias.zero_()
    m = net.config.latent_channels
    last = net.hyper_synthesis.convs[-1]
    last.weight.mul_(0.1)
    last.bias[:m] = 0.0
    last.bias[m:] = torch.log(std / SCALE_MIN) / LOG_STEP
