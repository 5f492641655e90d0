"""vaez: a learned lossy image codec (hyperprior VAE + entropy coding + the .vaez container).

    import neuralcodec
    data = neuralcodec.compress(image, quality=75)   # PIL image, uint8 array or path -> bytes
    data = neuralcodec.compress(image, target_size="50KB")   # or target_bpp= / target_psnr=
    image = neuralcodec.decompress(data)             # -> PIL.Image.Image, same size and mode
    result = neuralcodec.compress_to_target(image, target_psnr=36)   # bytes + what was reached

Importing this package is cheap: the weights load on the first call, torch only when
encoding (decoding on the CPU is NumPy only). It also registers the ``.vaez`` format with
Pillow, so ``PIL.Image.open("x.vaez")`` works.
"""
from __future__ import annotations

import os
import warnings

# Two thread pools share the cores: torch's OpenMP threads (encoding) and NumPy's OpenBLAS
# threads (decoding, the exact integer networks). By default each keeps its threads spinning
# for a while after its work, which made the other side up to 2x slower when a process
# both encodes and decodes (measured: the analysis transform 114 ms instead of 54). The
# libraries read these settings when they load, so they take effect when this package is
# imported before NumPy and torch (the `vaez` command sets them the same way); a value the
# user has set is kept.
THREAD_SETTINGS = {"OPENBLAS_THREAD_TIMEOUT": "4", "OMP_WAIT_POLICY": "PASSIVE"}
for _name, _value in THREAD_SETTINGS.items():
    os.environ.setdefault(_name, _value)

__version__ = "1.5.0"
__all__ = ["compress", "compress_to_target", "decompress", "Codec", "Encoded", "VaezError",
           "TargetWarning", "register_pillow", "__version__"]

from formats import VaezError  # noqa: E402  (light: no torch)

from .efforts import DEFAULT_EFFORT  # noqa: E402  (light: no torch)
from .pillow_plugin import register as register_pillow  # noqa: E402  (light: Pillow only)


class TargetWarning(UserWarning):
    """``compress`` could not reach the PSNR asked for and returned its best (quality 100)."""


def compress(image, quality: float = 75, coder: str = "auto", target_size=None,
             target_bpp=None, target_psnr=None, strip: bool = False,
             effort: int = DEFAULT_EFFORT, device: str = "cpu") -> bytes:
    """Compress an image to `.vaez` bytes. ``quality`` 1..100 (higher: more bits).

    At most one target replaces ``quality``: ``target_size`` (bytes, or a string such as
    ``"50KB"``, ``"1.5MB"``, ``"64KiB"``: the file is never larger, and within 5 % of it when
    the quality range allows; ValueError if even quality 1 is larger), ``target_bpp`` (the same
    as a size), ``target_psnr`` (dB: the lowest quality that reaches it; a ``TargetWarning``
    and the quality 100 file when it cannot be reached). ``strip`` drops the ICC profile and
    EXIF, which are otherwise kept. ``effort`` 0..3 (default 1): higher encodes slower and makes
    smaller files at the same quality (the decoder is unaffected; see ``neuralcodec.refine``).
    ``device``: where the transforms run (``"cpu"``, ``"cuda"``); files are the same format.
    """
    if target_size is None and target_bpp is None and target_psnr is None:
        from .codec import default_codec

        if strip:
            from .rate_control import prepare

            image = prepare(image, strip=True)[0]
        return default_codec(device).compress(image, quality=quality, coder=coder, effort=effort)
    from .codec import default_codec

    result = compress_to_target(image, quality=quality, coder=coder, target_size=target_size,
                                target_bpp=target_bpp, target_psnr=target_psnr, strip=strip,
                                effort=effort, codec=default_codec(device))
    if not result.met:
        warnings.warn(result.note, TargetWarning, stacklevel=2)
    return result.data


def compress_to_target(image, quality: float = 75, coder: str = "auto", target_size=None,
                       target_bpp=None, target_psnr=None, strip: bool = False, codec=None,
                       effort: int = DEFAULT_EFFORT):
    """Like ``compress``, but returns an ``Encoded`` record: ``data`` (the bytes), ``quality``,
    ``size``, ``bpp``, ``psnr``, whether the target was ``met``, the number of ``encodes`` and
    a ``note`` when the result is not as close to the target as asked. ``codec`` defaults to
    the shared one."""
    from . import rate_control

    if codec is None:
        from .codec import default_codec

        codec = default_codec()
    return rate_control.encode(codec, image, quality=quality, coder=coder,
                               target_size=target_size, target_bpp=target_bpp,
                               target_psnr=target_psnr, strip=strip, effort=effort)


def decompress(data: bytes, device: str = "cpu"):
    """Decode `.vaez` bytes to a `PIL.Image.Image` with the original size and mode.

    ``device``: where the synthesis runs; the latents are the same on every device."""
    from .codec import default_codec

    return default_codec(device).decompress(data)


def __getattr__(name):
    if name == "Codec":
        from .codec import Codec

        return Codec
    if name == "Encoded":
        from .rate_control import Encoded

        return Encoded
    raise AttributeError(f"module 'neuralcodec' has no attribute {name!r}")


register_pillow()
