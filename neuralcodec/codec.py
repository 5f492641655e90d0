"""The codec: image <-> `.vaez` bytes, tying the network, the entropy coders and the container.

Encoding: pad the image to a multiple of 32 (edge replication), run the analysis transform and
the quality gain, round the hyper-latent z, run the *integer* hyper-synthesis to get a mean and
a scale index for every latent, and code the integer residuals ``q = round(y - mean)`` (or one
step nearer zero where that pays: `refine.rate_aware_round`) with the Gaussian table picked by
the scale index. Decoding mirrors it. Only integers decide
probabilities, so a file decodes to the same latents on every machine; a CRC32 of the symbols
in the header turns any mismatch into an error instead of garbage.

Big images: above `TILE_ABOVE_PIXELS` the analysis, hyper-analysis and synthesis transforms
run on overlapping tiles whose halos cover their receptive fields (torch transforms through
`tiling.py`, the CPU decoder's NumPy synthesis through `NumpySynthesis.render`), so memory
stays bounded and the result equals the untiled one up to float summation order. The integer
hyper-synthesis always runs on tiles of z (exactly: integer arithmetic), and the per-latent
arithmetic around it works tile by tile without full-size float64 temporaries. Entropy coding
stays whole-image: tiling is invisible in the file, so a file encoded tiled decodes untiled to
the same latents and vice versa.

Torch is imported only when needed: to encode (the analysis transform), or to decode on a GPU.
Decoding on the CPU is NumPy only (integer hyper-synthesis and context, `NumpySynthesis`), so
`vaez decompress` does not pay the second or more that importing torch costs.
"""
from __future__ import annotations

import threading
import time
import zlib
from functools import partial
from pathlib import Path

import numpy as np

import formats
from formats import VaezError, VaezHeader

from . import workers
from .efforts import DEFAULT_EFFORT, check_effort
from .entropy import coders
from .model.constants import BLOCK, LEVELS, PAD_MULTIPLE, level_from_quality
from .model.integer_slices import IntegerSlices
from .model.integer_context import (IntegerContext, checkerboard_half, non_anchor_mask,
                                    set_checkerboard_half)
from .model.fixed_point import clamp
from .model.integer_hyper import (ACT_BITS, ACT_LIMIT_BITS, Z_LIMIT, IntegerHyperSynthesis,
                                  index_from_total, integer_hyper_geometry, quality_offset)
from .model.numpy_postfilter import NumpyPostFilter
from .model.numpy_synthesis import NumpySynthesis
from .spans import halo_windows, tile_starts
from .weights import Weights, load_weights

TILE_ABOVE_PIXELS = 1 << 21   # padded images with more pixels than this run their transforms tiled
TILE_PIXELS = 1024            # tile core (pixels per side) when tiling automatically
HYPER_TILE = 32               # z positions per side of an integer hyper-synthesis tile
BAND_ROWS = 8                 # latent rows per piece of elementwise work (see `workers`)
# The integer hyper-synthesis returns the gain-free mean as integers (|a| <= 2**ACT_LIMIT_BITS)
# times 2**-ACT_BITS: float32 holds those exactly while ACT_LIMIT_BITS <= 24, at half the memory.
_MEAN_DTYPE = np.float32 if ACT_LIMIT_BITS <= 24 else np.float64
# Rate-aware rounding at every effort (`refine.rate_aware_round`; 0: plain rounding). Its
# per-symbol distortion estimate leaves out that the moves of neighbouring symbols add up, so
# the price it puts on distortion is raised; BD-rate (PSNR) against plain rounding on the
# held-out validation photos at strength 3 / 6 / 9 / 14: +0.45 / -0.83 / -0.90 / -0.75%
# (`benchmarks/rounding.py`; strength 1, the literal estimate: +8.2%).
ROUNDING_STRENGTH = 9.0


def _latent_shapes(width: int, height: int, config: dict):
    ph = -(-height // PAD_MULTIPLE) * PAD_MULTIPLE
    pw = -(-width // PAD_MULTIPLE) * PAD_MULTIPLE
    y_shape = (config["latent_channels"], ph // BLOCK, pw // BLOCK)
    z_shape = (config["hyper_channels"], ph // (4 * BLOCK), pw // (4 * BLOCK))
    return y_shape, z_shape


def symbol_crc(z_symbols: np.ndarray, y_symbols: np.ndarray) -> int:
    # CRC over the arrays' buffers: no bytes copy of the (possibly huge) latent
    crc = zlib.crc32(np.ascontiguousarray(z_symbols, dtype="<i8"))
    return zlib.crc32(np.ascontiguousarray(y_symbols, dtype="<i8"), crc) & 0xFFFFFFFF


_TILED = ("analysis", "hyper_analysis", "synthesis")
_FOOTPRINTS: dict = {}
_FOOTPRINTS_LOCK = threading.Lock()


def _transform_footprints(net, config) -> dict | NotImplementedError:
    """Receptive fields of the tiled transforms, traced once per process and architecture.

    Traced when the network is built (first encode or GPU decode of a codec) rather than on
    the first big image: torch.fx patches ``nn.Module.__call__`` process-wide while it
    traces. The codec's network lock keeps its own threads waiting meanwhile; the trace is
    cached per architecture, so at most one trace per process could overlap another codec's
    torch work, and only if a second codec with a new architecture starts encoding while
    another already is.
    """
    from .tiling import footprint

    with _FOOTPRINTS_LOCK:
        found = _FOOTPRINTS.get(config)
        if found is None:
            try:
                found = {name: footprint(getattr(net, name)) for name in _TILED}
            except NotImplementedError as exc:    # raised again if tiling is ever needed
                found = exc
            _FOOTPRINTS[config] = found
        return found


def _check_tile_size(tile_size) -> None:
    if tile_size is None:
        return
    if (isinstance(tile_size, bool) or not isinstance(tile_size, (int, np.integer))
            or tile_size < 0 or tile_size % PAD_MULTIPLE):
        raise ValueError(f"tile_size must be None (automatic), 0 (never tile) or a positive "
                         f"multiple of {PAD_MULTIPLE} pixels, got {tile_size!r}")


class Codec:
    """A loaded model, ready to compress and decompress; safe to share between threads.

    ``timings`` holds the seconds spent per stage by the most recent call (per thread).

    ``tile_size`` (also a keyword of `compress` and `decompress`, which wins): ``None`` tiles
    the transforms of images above `TILE_ABOVE_PIXELS` in `TILE_PIXELS` tiles, ``0`` never
    tiles, a positive multiple of 32 always tiles with that core size in pixels. It changes
    memory and speed, never the file format.
    """

    def __init__(self, weights: str | Path | Weights | None = None, device: str = "cpu",
                 tile_size: int | None = None):
        self.device = check_device(device)
        self.weights = weights if isinstance(weights, Weights) else load_weights(weights)
        config = self.weights.config
        try:
            self.hyper = IntegerHyperSynthesis(self.weights.hyper_layers, config["latent_channels"])
            self.context = IntegerContext(self.weights.context) if self.weights.context else None
            if self.weights.slices and not self.context:
                raise ValueError(f"weights file {self.weights.model_id}: channel slices need "
                                 "a checkerboard context")
            self.slices = (IntegerSlices(self.weights.slices, config["latent_channels"])
                           if self.weights.slices else None)
            self.synthesis = NumpySynthesis(self.weights.float_params, config["synthesis_blocks"])
            self.postfilter = (NumpyPostFilter(self.weights.float_params)
                               if config.get("postfilter_channels") else None)
            log_gains = [self.weights.float_params[f"gains.{side}_log_gain"].astype(np.float64)
                         for side in ("encoder", "decoder")]
        except KeyError as exc:
            raise ValueError(f"weights file {self.weights.model_id}: missing {exc}") from None
        self.model_id = self.weights.model_id
        _check_tile_size(tile_size)
        self.tile_size = tile_size
        self._hyper_geometry = integer_hyper_geometry(self.weights.hyper_layers)
        if any(g.shape != (LEVELS, config["latent_channels"]) for g in log_gains):
            raise ValueError("weights: quality gain tables have the wrong shape")
        self._log_gains = dict(zip((False, True), log_gains))
        self._net = None
        self._net_lock = threading.Lock()
        self._local = threading.local()
        self.rounding_strength = ROUNDING_STRENGTH

    def decodes_model(self, model_id: str, digest: bytes) -> bool:
        """Whether files written with model ``model_id`` (weights ``digest``) decode here: the
        loaded weights, or earlier ones they were exported as latent-compatible with (the same
        latents; pixels then come from these weights, e.g. with a newer post-filter)."""
        if model_id == self.model_id and digest == self.weights.digest:
            return True
        return any(model_id == old["model_id"] and digest == bytes.fromhex(old["digest"])
                   for old in self.weights.meta.get("decodes", ()))

    @property
    def _torch(self):
        import torch

        return torch

    @property
    def net(self):
        """The float torch network (transforms, gains), built on first use: encoding needs
        it, decoding on the CPU does not."""
        if self._net is None:
            with self._net_lock:
                if self._net is None:
                    torch = self._torch
                    from .model.network import ModelConfig, VaezNetwork

                    config = ModelConfig(**self.weights.config)
                    # normal tensors even when first used under inference_mode (refine
                    # differentiates through the synthesis)
                    with torch.inference_mode(False):
                        net = VaezNetwork(config)
                        state = net.state_dict()
                        for name, value in self.weights.float_params.items():
                            state[name] = torch.from_numpy(value.astype(np.float32))
                        try:
                            net.load_state_dict(state)
                        except RuntimeError as exc:   # names or shapes that do not fit
                            raise ValueError(f"weights file {self.model_id} does not fit "
                                             f"the network: {exc}") from None
                        net.eval().requires_grad_(False)
                        self._footprints = _transform_footprints(net, config)
                        self._net = net.to(self.device)
        return self._net

    @property
    def timings(self) -> dict:
        return getattr(self._local, "timings", {})

    def _stage(self, name: str, start: float) -> float:
        now = time.perf_counter()
        timings = self._local.__dict__.setdefault("timings", {})
        timings[name] = timings.get(name, 0.0) + now - start
        return now

    def _gain(self, quality: float, decoder: bool) -> np.ndarray:
        """Per-channel float64 gain (M, 1, 1) at ``quality``: the trained log-gains interpolated
        linearly between the two nearest quality anchors (as `QualityGains` does in training).
        It only scales values, never picks tables, so float rounding here cannot change what
        a file decodes to."""
        table = self._log_gains[decoder]
        level = level_from_quality(quality)
        low = min(max(int(np.floor(level)), 0), LEVELS - 2)
        frac = level - low
        return np.exp(table[low] * (1 - frac) + table[low + 1] * frac)[:, None, None]

    def _footprint(self, name: str):
        """Receptive-field description of ``self.net.<name>`` (see `tiling.footprint`)."""
        self.net   # traced when the network is built
        if isinstance(self._footprints, Exception):
            raise RuntimeError(f"this model cannot run tiled: {self._footprints}")
        return self._footprints[name]

    def _tile_core(self, y_shape, tile_size) -> int:
        """Tile core in pixels for a latent of ``y_shape``, or 0 to run untiled."""
        _check_tile_size(tile_size)
        if tile_size is None:
            tile_size = self.tile_size
        if tile_size is None:
            pixels = y_shape[1] * y_shape[2] * BLOCK * BLOCK
            return TILE_PIXELS if pixels > TILE_ABOVE_PIXELS else 0
        return int(tile_size)

    def _hyper_tiles(self, z_symbols: np.ndarray, core: int):
        """Integer hyper-synthesis on overlapping tiles of z, cropped to their cores.

        Yields ``(rows, cols, mean_unit, coordinate)``: latent slices and the gain-free mean
        (float64) and scale coordinate (int64) there, bit-identical to a whole-z run.
        """
        halo, up = self._hyper_geometry
        _, rows, cols = z_symbols.shape
        for window_r, core_r in halo_windows(rows, core, halo):
            for window_c, core_c in halo_windows(cols, core, halo):
                mean, coordinate = self.hyper(z_symbols[:, window_r, window_c],
                                              strip_rows=window_r.stop - window_r.start)
                keep = (slice(None),
                        slice((core_r.start - window_r.start) * up, (core_r.stop - window_r.start) * up),
                        slice((core_c.start - window_c.start) * up, (core_c.stop - window_c.start) * up))
                yield (slice(core_r.start * up, core_r.stop * up),
                       slice(core_c.start * up, core_c.stop * up), mean[keep], coordinate[keep])

    def _each_hyper_band(self, z_symbols: np.ndarray, core: int, use) -> None:
        """`_hyper_tiles`, each tile cut into bands of `BAND_ROWS` latent rows that run side by
        side on the cores (see `workers`): ``use(rows, cols, mean_unit, coordinate)`` with the
        band's latent slices and its views of the tile's outputs; it must write only there."""
        for rows, cols, mean, coordinate in self._hyper_tiles(z_symbols, self._hyper_core(core)):
            def band(part: slice, rows=rows, cols=cols, mean=mean, coordinate=coordinate):
                use(slice(rows.start + part.start, rows.start + part.stop), cols,
                    mean[:, part], coordinate[:, part])

            workers.run([partial(band, slice(a, b))
                         for a, b in tile_starts(rows.stop - rows.start, BAND_ROWS)])

    @staticmethod
    def _scale_tables(coordinate, offset, index, total, rows, cols) -> None:
        """Both sides' table choice for one hyper tile: the total scale coordinate (kept in
        ``total`` for the context model, when there is one) and the scale index. Works in
        ``coordinate``'s own int64 buffer."""
        coordinate += offset[:, None, None]
        if total is not None:
            total[:, rows, cols] = clamp(coordinate, -(1 << 30), 1 << 30)
        index[:, rows, cols] = index_from_total(coordinate, in_place=True)

    def _analysis(self, padded: np.ndarray, core: int) -> np.ndarray:
        """g_a of a padded HxWx3 uint8 image: y_unit (M, H/8, W/8) float32 on the CPU."""
        torch = self._torch

        def read(rows=slice(None), cols=slice(None)):
            tile = np.ascontiguousarray(padded[rows, cols])
            x = torch.from_numpy(tile).permute(2, 0, 1)[None].float().div_(255)
            return x.to(self.device)

        if not core:
            return self.net.analysis(read()).cpu().numpy()[0]
        from .tiling import iter_tiles

        fp = self._footprint("analysis")
        y_unit = None
        for rows, cols, tile in iter_tiles(fp, self.net.analysis, padded.shape[:2],
                                           core // BLOCK, read):
            if y_unit is None:
                y_unit = np.empty((tile.shape[1],) + tuple(n // BLOCK for n in padded.shape[:2]),
                                  dtype=np.float32)
            y_unit[:, rows, cols] = tile[0].cpu().numpy()
        return y_unit

    def _hyper_analysis(self, y_unit: np.ndarray, core: int) -> np.ndarray:
        """Rounded h_a(y_unit) as float64 (Cz, h/4, w/4)."""
        torch = self._torch

        def read(rows=slice(None), cols=slice(None)):
            return torch.from_numpy(np.ascontiguousarray(y_unit[:, rows, cols]))[None].to(self.device)

        if not core:
            return torch.round(self.net.hyper_analysis(read())).cpu().double().numpy()[0]
        from .tiling import iter_tiles

        fp = self._footprint("hyper_analysis")
        z = None
        size = y_unit.shape[1:]
        for rows, cols, tile in iter_tiles(fp, self.net.hyper_analysis, size,
                                           core // PAD_MULTIPLE, read):
            if z is None:
                z = np.empty((tile.shape[1],) + tuple(int(n * fp.scale) for n in size))
            z[:, rows, cols] = torch.round(tile[0]).cpu().double().numpy()
        return z

    # -- encoding -------------------------------------------------------------------------
    def compress(self, image, quality: float = 75, coder: str = "auto", *,
                 tile_size: int | None = None, effort: int = DEFAULT_EFFORT) -> bytes:
        """Compress ``image`` (PIL image, uint8 array or path) to `.vaez` bytes.

        ``tile_size``: see the class docstring (``None``: the codec's setting).
        ``effort``: 0 (fastest) to 3, default `efforts.DEFAULT_EFFORT`; above 0 the encoder
        spends `efforts.ROUNDS` rounds of passes through the synthesis choosing cheaper symbols
        (see `neuralcodec.refine`). Files stay decodable by any vaez decoder of the same model;
        decoding speed is the same.
        """
        effort = check_effort(effort)
        torch = self._torch
        quality = float(quality)
        if not 1.0 <= quality <= 100.0:
            raise ValueError(f"quality must be between 1 and 100, got {quality:g}")
        quality = round(quality * 100) / 100          # what the header can hold
        _check_tile_size(tile_size)
        backend = coders.get(coder)
        self._local.timings = {}
        t = time.perf_counter()
        loaded = formats.load_image(image)
        height, width = loaded.pixels.shape[:2]
        t = self._stage("load", t)
        y_shape, z_shape = _latent_shapes(width, height, self.weights.config)
        core = self._tile_core(y_shape, tile_size)
        rgb = loaded.pixels if loaded.pixels.ndim == 3 else np.repeat(loaded.pixels[:, :, None], 3, 2)
        source = rgb if effort else None
        pad_h, pad_w = y_shape[1] * BLOCK - height, y_shape[2] * BLOCK - width
        if pad_h or pad_w:   # edge replication (uint8 here: the same values as after conversion)
            rgb = np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        with torch.inference_mode():
            y_unit = self._analysis(rgb, core)
            del rgb
            t = self._stage("analysis", t)
            z = self._hyper_analysis(y_unit, core)
        z_symbols = clamp(z, -Z_LIMIT, Z_LIMIT).astype(np.int64)
        # Integer hyper-synthesis tile by tile; the symbols q = round(y - mean) (rate-aware)
        # come out of the same float64 arithmetic as a whole-image pass, without full-size
        # temporaries.
        gain = self._gain(quality, decoder=False)
        hundredths = int(round(quality * 100))
        y_symbols = np.empty(y_shape, dtype=np.int64)
        index = np.empty(y_shape, dtype=np.uint8)   # 64 scale indexes fit a byte
        # the gained means the refinement needs; with a context model they are written over
        # the gain-free ones below (one full-size array fewer on big images)
        mean = np.empty(y_shape, dtype=np.float32) if effort and not self.context else None
        offset = quality_offset(self.weights.gain_offsets, hundredths)
        # with a context model: the gain-free mean and the total scale coordinate, kept exactly
        mean_unit_all = np.empty(y_shape, dtype=_MEAN_DTYPE) if self.context else None
        total = np.empty(y_shape, dtype=np.int32) if self.context else None
        quantize = self._quantizer(quality)
        others = non_anchor_mask(y_shape[1], y_shape[2]) if self.context else None

        def band(rows, cols, mean_unit, coordinate):     # tables and symbols of one band
            self._scale_tables(coordinate, offset, index, total, rows, cols)
            residual = y_unit[:, rows, cols].astype(np.float64) * gain
            residual -= mean_unit * gain
            if self.context:   # the context re-quantises the others below: zeros cost nothing
                residual[:, others[rows, cols]] = 0.0
            y_symbols[:, rows, cols] = quantize(residual, index[:, rows, cols])
            if mean is not None:
                mean[:, rows, cols] = mean_unit * gain
            if self.context:
                mean_unit_all[:, rows, cols] = mean_unit

        self._each_hyper_band(z_symbols, core, band)
        t = self._stage("hyper", t)
        if effort and not self.context:
            y_symbols = self._refine(source, y_symbols, mean, index, quality, effort)
            t = self._stage("refine", t)
        if self.context:
            # anchors keep their symbols; the others get tables and means corrected from their
            # anchor neighbours and are re-quantised around the corrected mean
            def requantize(rows, d_mean, d_coord):
                """One strip of latent rows. Other strips read this strip's anchors while it
                runs: only its non-anchors (``part``) are written."""
                part = others[rows]
                corrected = (mean_unit_all[:, rows].astype(np.float64) * gain
                             + d_mean * (1.0 / (1 << ACT_BITS)))
                new_index = index_from_total(total[:, rows].astype(np.int64) + d_coord, in_place=True)
                np.copyto(index[:, rows], new_index, where=part, casting="unsafe")
                value = y_unit[:, rows].astype(np.float64) * gain
                np.copyto(y_symbols[:, rows], quantize(np.where(part, value - corrected, 0.0), new_index),
                          where=part)
                if effort:   # this strip's gain-free means are not read again
                    mean_unit_all[:, rows] = np.where(
                        part, corrected, mean_unit_all[:, rows].astype(np.float64) * gain)

            self.context.each_strip(y_symbols, total, requantize)
            mean = mean_unit_all if effort else None
            del mean_unit_all, total
            t = self._stage("context", t)
            if effort:
                # the refinement prices moves with the tables the slices will pick for the
                # symbols as they stand (the file's are worked out again from its final ones)
                priced = self._sliced_index(y_symbols, index, self.slices)
                y_symbols = self._refine(source, y_symbols, mean, priced, quality, effort, others)
                del priced
                t = self._stage("refine", t)
        del y_unit, mean, source
        z_index = np.broadcast_to(np.arange(z_shape[0])[:, None, None], z_shape)
        z_stream = backend.encode(z_symbols.ravel(), z_index.ravel(), self.weights.z_tables)
        sections = {"ZSYM": z_stream}
        if self.context:
            for name, second in (("YSYM", False), ("YSYN", True)):
                sections[name] = self._encode_half(backend, y_symbols, index, second, self.slices)
        else:
            sections["YSYM"] = backend.encode(y_symbols.ravel(), index.ravel(), self.weights.y_tables)
        del index
        t = self._stage("entropy", t)
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

    def _quantizer(self, quality: float):
        """(residual before rounding, scale index) -> integer symbols at ``quality``: plain
        rounding when `rounding_strength` is 0 (or below), else `refine.rate_aware_round`."""
        if not self.rounding_strength > 0:
            return lambda value, index: np.round(value).astype(np.int64)
        from . import refine

        limit = refine.BITS_LIMIT
        bits = self._symbol_bits()[:, limit:]      # `refine.magnitude_bits`
        cost = refine.rounding_cost(self._energy(), self._gain(quality, decoder=True),
                                    self._lambda(quality), self.rounding_strength)
        return lambda value, index: refine.rate_aware_round(value, index, bits, cost)

    def _lambda(self, quality: float) -> float:
        """The rate-distortion trade-off the model trained for at ``quality``."""
        from .model.quality import lambda_at

        torch = self._torch
        return float(lambda_at(torch.tensor(level_from_quality(quality), dtype=torch.float64)))

    def _energy(self):
        """`refine.impulse_energy` of the synthesis: read from the weights' sidecar file when
        it was stored for exactly these weights (`weights.load_energy`), else computed once
        (a few tenths of a second: two synthesis passes over 192 small canvases)."""
        from . import refine
        from .weights import load_energy

        energy = getattr(self, "_impulse_energy", None)
        if energy is None:
            stored = load_energy(self.weights)
            if stored is not None:
                energy = self._torch.from_numpy(stored)
            else:
                with self._torch.no_grad():
                    energy = refine.impulse_energy(
                        self.net.synthesis, self.weights.config["latent_channels"], self.device)
            self._impulse_energy = energy
        return energy

    def _refine(self, pixels, y_symbols, mean, index, quality, effort, positions=None):
        """Symbols chosen for rate + distortion at ``effort`` (see `neuralcodec.refine`), at
        the latent ``positions`` given ((h, w) bool; all when None); ``y_symbols`` is refined
        in place (no full-size copy on big images) and returned.

        With a context model only the non-anchors are refined: a changed anchor also changes
        its neighbours' tables, which the per-symbol estimate cannot see (refining anchors too
        measured -4.5% BD-rate against -4.2% for the non-anchors alone on held-out crops with
        four passes, then effort 1, but sometimes raised the very cost it lowers). The
        rate-aware rounding does move anchors, with the same blind spot; it is judged by its
        measured result only."""
        from . import refine

        torch = self._torch
        energy = self._energy()
        level = level_from_quality(quality)
        lam = self._lambda(quality)
        fast = self._fast_dtype()
        kind = torch.device(self.device).type

        # gradients are needed even when the caller encodes under torch.inference_mode()
        with torch.inference_mode(False), torch.enable_grad():
            level_tensor = torch.tensor([level], device=self.device)
            synthesis, postfilter = self._refine_modules(fast is not None)

            def decoder(y_hat):
                """The synthesis' pixels, differentiable."""
                if fast is not None:
                    y_hat = y_hat.contiguous(memory_format=torch.channels_last)
                with torch.autocast(kind, dtype=fast, enabled=fast is not None):
                    return synthesis(y_hat).float()

            def filtered(plain):
                """The decoder's post-filter (it sees the clamped image, as the decoder
                filters the 8-bit one)."""
                with torch.autocast(kind, dtype=fast, enabled=fast is not None):
                    return postfilter(plain.clamp(0, 1), level_tensor)

            return refine.refine(decoder, pixels, y_symbols, mean, index,
                                 self._gain(quality, decoder=True), lam, refine.ROUNDS[effort],
                                 energy, self._symbol_bits(), device=self.device,
                                 positions=positions, in_place=True,
                                 postfilter=None if postfilter is None else filtered)

    def _refine_modules(self, channels_last: bool):
        """(synthesis, post-filter) for the refinement passes: the network's own, or copies
        in channels-last layout, which bfloat16 convolutions run faster in (measured: one
        768x512 pass 86 -> 72 ms, the post-filter 29 -> 25 ms; float32 ones do not gain)."""
        net = self.net
        if not channels_last:
            return net.synthesis, net.postfilter
        if getattr(self, "_channels_last", None) is None:
            import copy

            torch = self._torch
            with self._net_lock:
                if getattr(self, "_channels_last", None) is None:
                    self._channels_last = tuple(
                        None if m is None else copy.deepcopy(m).to(memory_format=torch.channels_last)
                        for m in (net.synthesis, net.postfilter))
        return self._channels_last

    def _symbol_bits(self) -> np.ndarray:
        """`refine.symbol_bits` of this model's y tables, computed once."""
        bits = getattr(self, "_table_bits", None)
        if bits is None:
            from .refine import symbol_bits

            bits = self._table_bits = symbol_bits(self.weights.y_tables)
        return bits

    def _fast_dtype(self):
        """bfloat16 where the hardware computes it natively (the refinement passes then cost
        about half: measured on this project's 2-core AVX-512-BF16 machine), else None
        (float32; emulated bfloat16 would be slower). The gradient only ranks candidate moves:
        on held-out photos bfloat16 and float32 passes gave the same BD-rate to within 0.02
        points."""
        import platform

        torch = self._torch
        try:
            if self.device != "cpu":     # Ampere or newer
                native = torch.cuda.get_device_capability(self.device)[0] >= 8
            elif platform.machine().lower() in ("x86_64", "amd64", "i386", "i686"):
                native = bool(torch.cpu._is_avx512_bf16_supported()
                              or torch.cpu._is_amx_tile_supported())
            else:
                native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            native = False
        return torch.bfloat16 if native else None

    def _hyper_core(self, core: int) -> int:
        """z positions per hyper-synthesis tile side for a transform tile of ``core`` pixels."""
        return core // PAD_MULTIPLE if core else HYPER_TILE

    # -- decoding -------------------------------------------------------------------------
    def _decode(self, data: bytes, tile_size: int | None = None):
        """Entropy-decode: (header, sections, z symbols, y symbols, gain-free mean, scale index,
        tile core in pixels or 0). The gain-free mean is held exactly in `_MEAN_DTYPE`."""
        header, sections = formats.unpack(data)
        if not self.decodes_model(header.model_id, header.model_digest):
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
        core = self._tile_core(y_shape, tile_size)
        t = time.perf_counter()
        z_index = np.broadcast_to(np.arange(z_shape[0])[:, None, None], z_shape)
        try:
            z_symbols = backend.decode(sections["ZSYM"], z_index.ravel(), self.weights.z_tables).reshape(z_shape)
            t = self._stage("entropy", t)
            hundredths = int(round(header.quality * 100))
            offset = quality_offset(self.weights.gain_offsets, hundredths)
            index = np.empty(y_shape, dtype=np.uint8)
            mean_unit = np.empty(y_shape, dtype=_MEAN_DTYPE)
            total = np.empty(y_shape, dtype=np.int32) if self.context else None

            def band(rows, cols, mean, coordinate):     # tables and gain-free means of one band
                self._scale_tables(coordinate, offset, index, total, rows, cols)
                mean_unit[:, rows, cols] = mean

            self._each_hyper_band(z_symbols, core, band)
            t = self._stage("hyper", t)
            if self.context:
                y_symbols, d_mean = self._decode_with_context(sections, backend, index, total,
                                                              self._slices_of(header.model_id))
            else:
                if "YSYN" in sections:
                    raise VaezError("the file has a YSYN section, which this model does not use")
                d_mean = None
                y_symbols = backend.decode(sections["YSYM"], index.ravel(),
                                           self.weights.y_tables).reshape(y_shape)
                self._stage("entropy", t)
        except VaezError:
            raise
        except (ValueError, IndexError, OverflowError, RuntimeError) as exc:
            raise VaezError(f"corrupt latent stream: {exc}") from None
        if symbol_crc(z_symbols, y_symbols) != header.symbol_crc:
            raise VaezError("latent checksum mismatch: the file is corrupt "
                            "(or was written by an incompatible coder build)")
        return header, sections, z_symbols, y_symbols, (mean_unit, d_mean), index, core

    def _decode_with_context(self, sections, backend, index, total, slices=None):
        """Anchors first (hyperprior tables; with ``slices``, slice by slice, see
        `_decode_half`), then the checkerboard context refines the tables of the other half,
        which is decoded second. Returns (y symbols, mean correction in
        2**-ACT_BITS units, int32, zero at anchors); updates ``index`` in place."""
        if "YSYN" not in sections:
            raise VaezError("the file lacks the YSYN section (second half of the latent) "
                            "that this model needs")
        shape = index.shape
        others = non_anchor_mask(shape[1], shape[2])
        t = time.perf_counter()
        y_symbols = np.zeros(shape, dtype=np.int64)
        t = self._decode_half(backend, sections["YSYM"], y_symbols, index, False, slices, t)
        d_mean = np.zeros(shape, dtype=np.int32)

        def refine_tables(rows, mean, coord):     # one strip of latent rows: its non-anchors
            refined = index_from_total(total[:, rows].astype(np.int64) + coord, in_place=True)
            np.copyto(index[:, rows], refined, where=others[rows], casting="unsafe")
            d_mean[:, rows] = mean

        self.context.each_strip(y_symbols, total, refine_tables)
        del total
        t = self._stage("context", t)
        self._decode_half(backend, sections["YSYN"], y_symbols, index, True, slices, t)
        return y_symbols, d_mean

    def _slices_of(self, model_id: str):
        """The channel slices a file uses: those of these weights for files written with them;
        none for files of the earlier models these weights decode."""
        return self.slices if model_id == self.model_id else None

    def _encode_half(self, backend, y_symbols, index, second: bool, slices) -> bytes:
        """One checkerboard half as a stream: channel by channel, row by row; with slices, in
        their channel order, one coder piece per slice, each slice's tables corrected from
        the earlier slices' symbols (`IntegerSlices`)."""
        m = y_symbols.shape[0]
        symbols = checkerboard_half(y_symbols, second).reshape(m, -1)
        tables = checkerboard_half(index, second).reshape(m, -1)
        if slices is None:
            return backend.encode(symbols.ravel(), tables.ravel(), self.weights.y_tables)
        slices.correct(symbols, tables, anchors=not second)
        channels = slices.channels()
        order = np.concatenate(channels)
        return backend.encode(symbols[order].ravel(), tables[order].ravel(), self.weights.y_tables,
                              pieces=[len(c) * symbols.shape[1] for c in channels])

    def _sliced_index(self, y_symbols, index, slices):
        """``index`` with the slices' corrections for ``y_symbols`` (``index`` itself without)."""
        if slices is None:
            return index
        m = index.shape[0]
        out = index.copy()
        for second in (False, True):
            symbols = checkerboard_half(y_symbols, second).reshape(m, -1)
            tables = checkerboard_half(index, second).reshape(m, -1)
            slices.correct(symbols, tables, anchors=not second)
            set_checkerboard_half(out, second, tables.reshape(m, index.shape[1], -1))
        return out

    def _decode_half(self, backend, data: bytes, y_symbols, index, second: bool, slices,
                     t: float) -> float:
        """Inverse of `_encode_half`: fills that half of ``y_symbols`` (and of ``index``, with
        the tables the slices chose). Times the stages "entropy" and "slices" from ``t``;
        returns the time it ended."""
        m = y_symbols.shape[0]
        half = (m, y_symbols.shape[1], y_symbols.shape[2] // 2)
        tables = checkerboard_half(index, second).reshape(m, -1)
        if slices is None:
            set_checkerboard_half(y_symbols, second, backend.decode(
                data, tables.ravel(), self.weights.y_tables).reshape(half))
            return self._stage("entropy", t)
        n = tables.shape[1]
        symbols = np.zeros((m, n), dtype=np.int64)
        decoder = backend.PieceDecoder(data, m * n, self.weights.y_tables)
        for j, own in enumerate(slices.channels()):
            if j:
                tables[own] = slices.index(j, symbols, tables, anchors=not second)
                t = self._stage("slices", t)
            symbols[own] = decoder.decode(tables[own].ravel()).reshape(len(own), n)
            t = self._stage("entropy", t)
        decoder.close()
        set_checkerboard_half(y_symbols, second, symbols.reshape(half))
        set_checkerboard_half(index, second, tables.reshape(half))
        return self._stage("entropy", t)

    def decode_latents(self, data: bytes):
        """Entropy-decode ``data``: (header, sections, z symbols, y symbols, mean, scale index).

        ``mean`` is the float64 mean in the gained domain (the ``mean`` of ``q = round(y - mean)``).
        """
        self._local.timings = {}
        header, sections, z_symbols, y_symbols, (mean_unit, d_mean), index, _ = self._decode(data)
        mean = mean_unit.astype(np.float64) * self._gain(header.quality, decoder=False)
        if d_mean is not None:
            mean += d_mean * (1.0 / (1 << ACT_BITS))
        return header, sections, z_symbols, y_symbols, mean, index

    def decompress(self, data: bytes, *, tile_size: int | None = None, postfilter: bool = True):
        """Decode `.vaez` bytes to a PIL image of the original size and mode.

        ``tile_size``: see the class docstring (``None``: the codec's setting).
        ``postfilter``: False gives the synthesis' image before the post-filter (what the
        post-filter is trained on; not what a decoder shows).
        """
        _check_tile_size(tile_size)
        self._local.timings = {}
        header, sections, z_symbols, y_symbols, (mean_unit, d_mean), index, core = self._decode(
            data, tile_size)
        del z_symbols, index           # up to a byte per latent: not kept through the synthesis
        t = time.perf_counter()
        # y_hat = (q + mean) * decoder gain, in float32 (what the synthesis takes) and in row
        # strips (no full-size temporaries)
        enc_gain = self._gain(header.quality, decoder=False).astype(np.float32)
        dec_gain = self._gain(header.quality, decoder=True).astype(np.float32)
        y_hat = np.empty(y_symbols.shape, dtype=np.float32)

        def band(r0, r1):
            part = y_hat[:, r0:r1]
            np.multiply(mean_unit[:, r0:r1], enc_gain, out=part)
            if d_mean is not None:
                part += d_mean[:, r0:r1] * np.float32(1.0 / (1 << ACT_BITS))
            part += clamp(y_symbols[:, r0:r1], -(1 << 20), 1 << 20)
            part *= dec_gain

        workers.run([partial(band, r0, r1) for r0, r1 in tile_starts(y_symbols.shape[1], BAND_ROWS)])
        del y_symbols, mean_unit, d_mean
        height, width = header.height, header.width
        # the post-filter works on groups of s x s pixels: render up to a multiple of s
        # (the synthesis covers the padded latent, so those pixels exist)
        s = self.postfilter.scale if self.postfilter else 1
        full_h, full_w = -(-height // s) * s, -(-width // s) * s
        if self.device == "cpu":
            rgb = np.empty((full_h, full_w, 3), dtype=np.uint8)
            self.synthesis.render(y_hat, rgb, core // BLOCK)
        else:
            rgb = self._torch_synthesis(y_hat, full_h, full_w, core)
        del y_hat
        t = self._stage("synthesis", t)
        if self.postfilter and postfilter:
            rgb = self.postfilter.apply(rgb, level_from_quality(header.quality))
            t = self._stage("postfilter", t)
        rgb = rgb[:height, :width]
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

    def _torch_synthesis(self, y_hat: np.ndarray, height: int, width: int, core: int) -> np.ndarray:
        """g_s with torch on ``self.device`` (a GPU), tiled when ``core``: (height, width, 3) uint8."""
        from .tiling import iter_tiles

        torch = self._torch

        def to_uint8(x):
            # (1, 3, h, w) float in [0, 1] -> (h, w, 3) uint8
            return x[0].clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()

        with torch.inference_mode():
            if not core:
                x = self.net.synthesis(torch.from_numpy(y_hat)[None].to(self.device))
                rgb = to_uint8(x[:, :, :height, :width])
                del x
            else:
                rgb = np.empty((height, width, 3), dtype=np.uint8)

                def read(rows, cols):
                    tile = np.ascontiguousarray(y_hat[:, rows, cols])
                    return torch.from_numpy(tile)[None].to(self.device)

                for rows, cols, tile in iter_tiles(self._footprint("synthesis"), self.net.synthesis,
                                                   y_hat.shape[1:], core, read):
                    h = min(rows.stop, height) - rows.start
                    w = min(cols.stop, width) - cols.start
                    if h > 0 and w > 0:
                        rgb[rows.start:rows.start + h, cols.start:cols.start + w] = to_uint8(
                            tile[:, :, :h, :w])
        return rgb


def _check_exif(exif: bytes) -> None:
    """Refuse an EXIF section Pillow cannot parse (it would fail later, when saving)."""
    from PIL import Image

    try:
        Image.Exif().load(exif)
    except Exception as exc:  # Pillow raises SyntaxError, struct.error, ValueError, ...
        raise VaezError(f"EXIF section is malformed ({type(exc).__name__}: {exc})") from None


def check_device(device) -> str:
    """``device`` as the name of a torch device this machine has ("cpu", "cuda", "cuda:1"),
    or ValueError with the reason. "cpu" is accepted without importing torch.

    Only where the transforms run: the entropy coding and the integer hyper-synthesis always
    run on the CPU, so a file written on one device decodes to the same latents on any other.
    """
    if device == "cpu":
        return "cpu"
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {device!r} ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} is not available: this torch build sees no CUDA GPU")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r} is not supported (use cpu or cuda)")
    return "cpu" if dev.type == "cpu" else str(dev)


_DEFAULTS: dict[str, Codec] = {}
_DEFAULT_LOCK = threading.Lock()


def default_codec(device: str = "cpu") -> Codec:
    """The process-wide codec with the bundled weights on ``device``, loaded on first use."""
    key = str(check_device(device))
    with _DEFAULT_LOCK:
        if key not in _DEFAULTS:
            _DEFAULTS[key] = Codec(device=key)
        return _DEFAULTS[key]
