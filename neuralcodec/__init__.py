"""vaez: a learned lossy image codec (hyperprior VAE + entropy coding + the .vaez container).

    import neuralcodec
    data = neuralcodec.compress(image, quality=75)   # PIL image, uint8 array or path -> bytes
    image = neuralcodec.decompress(data)             # -> PIL.Image.Image, same size and mode

Importing this package is cheap: torch and the weights load on the first call.
"""
from __future__ import annotations

__version__ = "1.0.0"
__all__ = ["compress", "decompress", "Codec", "VaezError", "__version__"]

from formats import VaezError  # noqa: E402  (light: no torch)


def compress(image, quality: float = 75, coder: str = "auto") -> bytes:
    """Compress an image to `.vaez` bytes. ``quality`` 1..100 (higher: more bits)."""
    from .codec import default_codec

    return default_codec().compress(image, quality=quality, coder=coder)


def decompress(data: bytes):
    """Decode `.vaez` bytes to a `PIL.Image.Image` with the original size and mode."""
    from .codec import default_codec

    return default_codec().decompress(data)


def __getattr__(name):
    if name == "Codec":
        from .codec import Codec

        return Codec
    raise AttributeError(f"module 'neuralcodec' has no attribute {name!r}")
