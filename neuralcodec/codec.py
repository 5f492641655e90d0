"""The codec: image <-> `.vaez` bytes, tying the network, the entropy coders and the container.

Encoding: pad the image to a multiple of 32 (edge replication), run the analysis transform and
the quality gain, round the hyper-latent z, run the *integer* hyper-synthesis to get a mean and
a scale index for every latent, and code the integer residuals ``q = round(y - mean)`` with the
Gaussian table picked by the scale index. Decoding mirrors it. Only integers decide
probabilities, so a file decodes to the same latents on every machine; a CRC32 of the symbols
in the header turns any mismatch into an error instead of garbage.
"""
from __future__ import annotations

import threading
import time
import zlib
from pathlib import Path

import numpy as np

import formats
from formats import VaezError, VaezHeader

from .entropy import coders
from .model.integer_hyper import Z_LIMIT, scale_index
from .model.network import PAD_MULTIPLE
from .model.transforms import BLOCK
from .weights import Weights, load_weights


def _latent_shapes(width: int, height: int, config: dict):
    ph = -(-height // PAD_MULTIPLE) * PAD_MULTIPLE
    pw = -(-width // PAD_MULTIPLE) * PAD_MULTIPLE
    y_shape = (config["latent_channels"], ph // BLOCK, pw // BLOCK)
    z_shape = (config["hyper_channels"], ph // (4 * BLOCK), pw // (4 * BLOCK))
    return y_shape, z_shape


def symbol_crc(z_symbols: np.ndarray, y_symbols: np.ndarray) -> int:
    crc = zlib.crc32(np.ascontiguousarray(z_symbols, dtype="<i8").tobytes())
    return zlib.crc32(np.ascontiguousarray(y_symbols, dtype="<i8").tobytes(), crc) & 0xFFFFFFFF


class Codec:
    """A loaded model, ready to compress and decompress; safe to share between threads.

    ``timings`` holds the seconds spent per stage by the most recent call (per thread).
    """

    def __init__(self, weights: str | Path | Weights | None = None, device: str = "cpu"):
        import torch  # imported here so `import neuralcodec` stays light

        from .model import ModelConfig, VaezNetwork
        from .model.integer_hyper import IntegerHyperSynthesis

        self._torch = torch
        self.weights = weights if isinstance(weights, Weights) else load_weights(weights)
        self.device = torch.device(device)
        config = ModelConfig(**self.weights.config)
        net = VaezNetwork(config)
        state = net.state_dict()
        for name, value in self.weights.float_params.items():
            state[name] = torch.from_numpy(value.astype(np.float32))
        net.load_state_dict(state)
        net.eval().requires_grad_(False)
        self.net = net.to(self.device)
        self.hyper = IntegerHyperSynthesis(self.weights.hyper_layers, config.latent_channels)
        self.model_id = self.weights.model_id
        self._local = threading.local()

    @property
    def timings(self) -> dict:
        return getattr(self._local, "timings", {})

    def _stage(self, name: str, start: float) -> float:
        now = time.perf_counter()
        timings = self._local.__dict__.setdefault("timings", {})
        timings[name] = timings.get(name, 0.0) + now - start
        return now

    def _gain(self, quality: float, decoder: bool) -> np.ndarray:
        """Per-channel float gain (M, 1, 1) at ``quality``; it only scales values, never picks tables."""
        from .model.quality import level_from_quality

        level = self._torch.tensor([level_from_quality(quality)], device=self.device)
        gains = self.net.gains.decoder_gain(level) if decoder else self.net.gains.encoder_gain(level)
        return gains[0].double().cpu().numpy()

    def _predict(self, z_symbols: np.ndarray, quality: float):
        """Mean (gained domain, float) and integer scale index of every latent."""
        mean_unit, coordinate = self.hyper(z_symbols)
        index = scale_index(coordinate, self.weights.gain_offsets, int(round(quality * 100)))
        return mean_unit * self._gain(quality, decoder=False), index

    # -- encoding -------------------------------------------------------------------------
    def compress(self, image, quality: float = 75, coder: str = "auto") -> bytes:
        """Compress ``image`` (PIL image, uint8 array or path) to `.vaez` bytes."""
        torch = self._torch
        quality = float(quality)
        if not 1.0 <= quality <= 100.0:
            raise ValueError(f"quality must be between 1 and 100, got {quality:g}")
        quality = round(quality * 100) / 100          # what the header can hold
        backend = coders.get(coder)
        self._local.timings = {}
        t = time.perf_counter()
        loaded = formats.load_image(image)
        height, width = loaded.pixels.shape[:2]
        t = self._stage("load", t)
        rgb = loaded.pixels if loaded.pixels.ndim == 3 else np.repeat(loaded.pixels[:, :, None], 3, 2)
        y_shape, z_shape = _latent_shapes(width, height, self.weights.config)
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float().div_(255)
        pad_h, pad_w = y_shape[1] * BLOCK - height, y_shape[2] * BLOCK - width
        if pad_h or pad_w:
            x = torch.nn.functional.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        with torch.inference_mode():
            y_unit = self.net.analysis(x.to(self.device))
            t = self._stage("analysis", t)
            z = torch.round(self.net.hyper_analysis(y_unit)).cpu().double().numpy()[0]
        z_symbols = np.clip(z, -Z_LIMIT, Z_LIMIT).astype(np.int64)
        mean, scale_index = self._predict(z_symbols, quality)
        t = self._stage("hyper", t)
        y = y_unit.cpu().double().numpy()[0] * self._gain(quality, decoder=False)
        y_symbols = np.round(y - mean).astype(np.int64)
        z_index = np.broadcast_to(np.arange(z_shape[0])[:, None, None], z_shape)
        z_stream = backend.encode(z_symbols.ravel(), z_index.ravel(), self.weights.z_tables)
        y_stream = backend.encode(y_symbols.ravel(), scale_index.ravel(), self.weights.y_tables)
        t = self._stage("entropy", t)
        sections = {"ZSYM": z_stream, "YSYM": y_stream}
        if loaded.alpha is not None:
            sections["ALPH"] = formats.encode_alpha(loaded.alpha)
        if loaded.icc_profile:
            sections["ICCP"] = loaded.icc_profile
        if loaded.exif:
            sections["EXIF"] = loaded.exif
        header = VaezHeader(width=width, height=height, mode=loaded.mode, quality=quality,
                            coder=backend.NAME, model_id=self.model_id,
                            model_digest=self.weights.digest, y_shape=tuple(y_shape),
                            z_shape=tuple(z_shape), symbol_crc=symbol_crc(z_symbols, y_symbols))
        data = formats.pack(header, sections)
        self._stage("container", t)
        return data

    # -- decoding -------------------------------------------------------------------------
    def decode_latents(self, data: bytes):
        """Entropy-decode ``data``: (header, sections, z symbols, y symbols, mean, scale index)."""
        header, sections = formats.unpack(data)
        if header.model_id != self.model_id or header.model_digest != self.weights.digest:
            raise VaezError(
                f"this file needs model {header.model_id} (digest {header.model_digest.hex()}), "
                f"but this installation has {self.model_id} (digest {self.weights.digest.hex()})")
        y_shape, z_shape = _latent_shapes(header.width, header.height, self.weights.config)
        if tuple(header.y_shape) != y_shape or tuple(header.z_shape) != z_shape:
            raise VaezError(f"latent shapes {header.y_shape}/{header.z_shape} do not match a "
                            f"{header.width}x{header.height} image")
        try:
            backend = coders.get(header.coder)
        except (ValueError, RuntimeError) as exc:
            raise VaezError(str(exc)) from None
        t = time.perf_counter()
        z_index = np.broadcast_to(np.arange(z_shape[0])[:, None, None], z_shape)
        try:
            z_symbols = backend.decode(sections["ZSYM"], z_index.ravel(), self.weights.z_tables).reshape(z_shape)
            t = self._stage("entropy", t)
            mean, index = self._predict(z_symbols, header.quality)
            t = self._stage("hyper", t)
            y_symbols = backend.decode(sections["YSYM"], index.ravel(), self.weights.y_tables).reshape(y_shape)
            self._stage("entropy", t)
        except VaezError:
            raise
        except (ValueError, IndexError, OverflowError, RuntimeError) as exc:
            raise VaezError(f"corrupt latent stream: {exc}") from None
        if symbol_crc(z_symbols, y_symbols) != header.symbol_crc:
            raise VaezError("latent checksum mismatch: the file is corrupt "
                            "(or was written by an incompatible coder build)")
        return header, sections, z_symbols, y_symbols, mean, index

    def decompress(self, data: bytes):
        """Decode `.vaez` bytes to a PIL image of the original size and mode."""
        torch = self._torch
        self._local.timings = {}
        header, sections, _, y_symbols, mean, _ = self.decode_latents(data)
        t = time.perf_counter()
        y_hat = (np.clip(y_symbols, -(1 << 20), 1 << 20) + mean) * self._gain(header.quality, decoder=True)
        y_hat = torch.from_numpy(y_hat.astype(np.float32))[None]
        with torch.inference_mode():
            x = self.net.synthesis(y_hat.to(self.device))
            x = x[0, :, :header.height, :header.width].clamp(0, 1).mul(255).round().to(torch.uint8)
            rgb = x.permute(1, 2, 0).cpu().numpy()
        t = self._stage("synthesis", t)
        if header.mode in ("L", "LA"):
            pixels = np.round(rgb.astype(np.float32).mean(axis=2)).astype(np.uint8)
        else:
            pixels = np.ascontiguousarray(rgb)
        alpha = None
        if header.has_alpha:
            alpha = formats.decode_alpha(sections["ALPH"], header.width, header.height)
        exif = sections.get("EXIF")
        if exif is not None:
            _check_exif(exif)
        image = formats.to_pil(pixels, alpha, header.mode, sections.get("ICCP"), exif)
        self._stage("image", t)
        return image


def _check_exif(exif: bytes) -> None:
    """Refuse an EXIF section Pillow cannot parse (it would fail later, when saving)."""
    from PIL import Image

    try:
        Image.Exif().load(exif)
    except Exception as exc:  # Pillow raises SyntaxError, struct.error, ValueError, ...
        raise VaezError(f"EXIF section is malformed ({type(exc).__name__}: {exc})") from None


_DEFAULT: Codec | None = None
_DEFAULT_LOCK = threading.Lock()


def default_codec() -> Codec:
    """The process-wide codec with the bundled weights, loaded on first use."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = Codec()
        return _DEFAULT
