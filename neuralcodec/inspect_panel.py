"""``vaez inspect``: one figure that shows what the codec did to an image and where its bits went.

One job: make the codec's behaviour visible for a single image, for people tuning quality or
debugging the model. The panel shows the original, the reconstruction, the absolute error, a
heat map of the bits spent at every latent position (the ideal code length -log2 p of each
coded latent under the table the decoder picks, summed over channels) and the latent channels
that cost the most bits. For a ``.vaez`` input the original is unknown, so only the decoded
image is shown and there is no error map or PSNR.

matplotlib is an optional dependency (``pip install 'vaez[plot]'``); without it
``require_matplotlib`` raises ``MatplotlibMissing`` with that one-line instruction.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

import formats

__all__ = ["MISSING_MESSAGE", "MatplotlibMissing", "Analysis", "require_matplotlib",
           "symbol_bits", "analyse", "render", "write_panel"]

MISSING_MESSAGE = "vaez inspect needs matplotlib: pip install 'vaez[plot]'"
TOP_CHANNELS = 8


class MatplotlibMissing(RuntimeError):
    """matplotlib is not installed; the message says how to get it."""


def require_matplotlib() -> None:
    """Raise ``MatplotlibMissing`` unless matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.figure import Figure  # noqa: F401
    except ImportError:
        raise MatplotlibMissing(MISSING_MESSAGE) from None


@dataclass
class Analysis:
    """Everything the panel shows for one image."""

    name: str
    header: formats.VaezHeader
    size: int                       # bytes of the .vaez file
    sections: dict                  # section tag -> payload bytes
    original: np.ndarray | None     # HxW or HxWx3 uint8 colour pixels; None for a .vaez input
    decoded: np.ndarray             # the same for the reconstruction
    bits: np.ndarray                # (C, h, w) ideal bits of every coded latent
    y_symbols: np.ndarray           # (C, h, w) coded integers
    block: int                      # pixels per latent position along each axis

    @property
    def bpp(self) -> float:
        return 8 * self.size / (self.header.width * self.header.height)

    @property
    def psnr(self) -> float | None:
        if self.original is None:
            return None
        from .rate_control import psnr

        return psnr(self.original, self.decoded)


def symbol_bits(y_symbols: np.ndarray, scale_index: np.ndarray, tables) -> np.ndarray:
    """Ideal code length in bits of every latent symbol: -log2(freq / 2**16) under the table its
    scale index picks; an escaped value adds the escape entry's cost and its varint bytes."""
    from .entropy.tables import PRECISION, split_escapes

    symbols = np.asarray(y_symbols, dtype=np.int64)
    index = np.asarray(scale_index, dtype=np.int64).ravel()
    positions, _ = split_escapes(symbols.ravel(), index, tables)
    freqs = np.ones((len(tables), max(len(t.freqs) for t in tables)), dtype=np.float64)
    for row, table in enumerate(tables):
        freqs[row, :len(table.freqs)] = table.freqs
    bits = PRECISION - np.log2(freqs[index, positions])
    sizes = np.array([t.size for t in tables], dtype=np.int64)[index]
    escaped = positions == sizes
    if escaped.any():
        values = symbols.ravel()[escaped]
        zigzag = np.where(values >= 0, 2 * values, -2 * values - 1).astype(np.float64)
        varint_bytes = np.maximum(1, np.ceil(np.floor(np.log2(np.maximum(zigzag, 1)) + 1) / 7))
        bits[escaped] += 8 * varint_bytes
    return bits.reshape(symbols.shape)


def _colour(image) -> np.ndarray:
    """The colour (or grey) channels of a PIL image as uint8, alpha dropped."""
    arr = np.asarray(image)
    if image.mode == "LA":
        return np.ascontiguousarray(arr[..., 0])
    if image.mode == "RGBA":
        return np.ascontiguousarray(arr[..., :3])
    return arr


def _is_vaez(source) -> bool:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source[:len(formats.MAGIC)]) == formats.MAGIC
    if isinstance(source, (str, os.PathLike)) and os.path.isfile(source):
        with open(source, "rb") as f:
            return f.read(len(formats.MAGIC)) == formats.MAGIC
    return False


def analyse(source, quality: float = 75, coder: str = "auto", codec=None,
            name: str | None = None) -> Analysis:
    """Compress ``source`` (an image: path, bytes, PIL image or array) at ``quality``, or take
    it as it is when it already is a ``.vaez`` file (path or bytes), and measure it."""
    from .codec import default_codec
    from .model.transforms import BLOCK

    codec = codec or default_codec()
    if name is None:
        name = os.fsdecode(source) if isinstance(source, (str, os.PathLike)) else "<image>"
    if _is_vaez(source):
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as f:
                data = f.read()
        else:
            data = bytes(source)
        original = None
    else:
        from .rate_control import prepare

        pil, loaded = prepare(source)
        data = codec.compress(pil, quality=quality, coder=coder)
        original = loaded.pixels
    header, sections, _, y_symbols, _, scale_index = codec.decode_latents(data)
    decoded = _colour(codec.decompress(data))
    bits = symbol_bits(y_symbols, scale_index, codec.weights.y_tables)
    return Analysis(name=name, header=header, size=len(data), sections=sections,
                    original=original, decoded=decoded, bits=bits, y_symbols=y_symbols,
                    block=BLOCK)


def _show_image(ax, pixels: np.ndarray, title: str) -> None:
    if pixels.ndim == 2:
        ax.imshow(pixels, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(pixels, interpolation="nearest")
    ax.set_title(title, fontsize=10)
    ax.set_axis_off()


def _note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=10,
            transform=ax.transAxes, color="0.3")
    ax.set_axis_off()


def render(a: Analysis):
    """The panel as a ``matplotlib.figure.Figure`` (no pyplot, no global state)."""
    require_matplotlib()
    from matplotlib.figure import Figure

    h = a.header
    fig = Figure(figsize=(15, 9.6), dpi=100)
    grid = fig.add_gridspec(2, 3, height_ratios=(1, 1), hspace=0.25, wspace=0.18)
    ax_orig, ax_rec, ax_err = (fig.add_subplot(grid[0, i]) for i in range(3))
    ax_bits = fig.add_subplot(grid[1, 0])
    channel_grid = grid[1, 1:].subgridspec(2, TOP_CHANNELS // 2, hspace=0.35, wspace=0.1)

    if a.original is not None:
        _show_image(ax_orig, a.original, "original")
    else:
        _note(ax_orig, "original unknown\n(the input is a .vaez file:\nonly its decoded image exists)")
    _show_image(ax_rec, a.decoded, f"reconstruction (quality {h.quality:g})")
    if a.original is not None:
        error = np.abs(a.original.astype(np.int16) - a.decoded.astype(np.int16))
        if error.ndim == 3:
            error = error.mean(axis=2)
        shown = ax_err.imshow(error, cmap="magma", vmin=0, vmax=max(float(error.max()), 1.0),
                              interpolation="nearest")
        fig.colorbar(shown, ax=ax_err, fraction=0.046, pad=0.02, label="|error| (of 255)")
        ax_err.set_title(f"absolute error (mean {error.mean():.2f})", fontsize=10)
        ax_err.set_axis_off()
    else:
        _note(ax_err, "no error map:\nthe original is unknown")

    per_position = a.bits.sum(axis=0)
    heat = np.repeat(np.repeat(per_position, a.block, axis=0), a.block, axis=1)[:h.height, :h.width]
    shown = ax_bits.imshow(heat, cmap="viridis", interpolation="nearest")
    fig.colorbar(shown, ax=ax_bits, fraction=0.046, pad=0.02,
                 label=f"bits per latent position ({a.block}x{a.block} px)")
    y_bytes = len(a.sections.get("YSYM", b"")) + len(a.sections.get("YSYN", b""))
    z_bytes = len(a.sections.get("ZSYM", b""))
    ax_bits.set_title(f"where the bits go (y {y_bytes} B, z {z_bytes} B)", fontsize=10)
    ax_bits.set_axis_off()

    per_channel = a.bits.reshape(a.bits.shape[0], -1).sum(axis=1)
    top = np.argsort(-per_channel, kind="stable")[:TOP_CHANNELS]
    for slot, channel in enumerate(top):
        ax = fig.add_subplot(channel_grid[slot // (TOP_CHANNELS // 2), slot % (TOP_CHANNELS // 2)])
        plane = a.y_symbols[channel]
        limit = max(int(np.abs(plane).max()), 1)
        ax.imshow(plane, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
        ax.set_title(f"channel {channel}: {per_channel[channel] / 8:.0f} B", fontsize=8)
        ax.set_axis_off()
    fig.text(0.69, 0.485, f"the {len(top)} latent channels that cost the most bits "
             "(coded integers; red > 0 > blue)", ha="center", fontsize=10)

    psnr = a.psnr
    quality_text = (f"PSNR {psnr:.2f} dB" if psnr is not None and math.isfinite(psnr)
                    else "PSNR lossless" if psnr is not None else "PSNR unknown (no original)")
    fig.suptitle(f"{a.name}: {h.width}x{h.height} {h.mode}, quality {h.quality:g}, "
                 f"{a.size} bytes, {a.bpp:.3f} bpp, {quality_text}", fontsize=12)
    return fig


def write_panel(path, source, quality: float = 75, coder: str = "auto", codec=None,
                force: bool = False, name: str | None = None) -> Analysis:
    """Analyse ``source`` and write the panel PNG to ``path`` atomically
    (``formats.atomic_write``: an existing file is only replaced with ``force``)."""
    require_matplotlib()
    analysis = analyse(source, quality=quality, coder=coder, codec=codec, name=name)
    fig = render(analysis)
    formats.atomic_write(path, lambda f: fig.savefig(f, format="png"), force)
    return analysis
