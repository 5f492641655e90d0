"""File formats for vaez: the ``.vaez`` container and input/output image handling.

The container half (`formats.vaez`) needs only the standard library; the image half
(`formats.images`: NumPy and Pillow) loads on first use, so that `vaez info` (on files
without an ICC profile or EXIF, whose summary needs Pillow) and other header-only readers
start in a few tens of milliseconds.
"""

from .vaez import (HEADER_SIZE, MAGIC, MAX_HEADER_SIZE, MAX_PIXELS, MAX_SIDE, VERSION, VERSIONS,
                   VaezError, VaezHeader, header_size, pack, read_header, read_section, unpack)

_IMAGE_NAMES = frozenset({
    "ImageError", "LoadedImage", "load_image", "to_pil", "encode_alpha", "decode_alpha",
    "OutputExistsError", "image_format", "encode_image", "check_output_path", "atomic_write",
    "save_image",
})

__all__ = [
    "MAGIC", "VERSION", "VERSIONS", "HEADER_SIZE", "MAX_HEADER_SIZE", "MAX_PIXELS", "MAX_SIDE",
    "VaezError", "VaezHeader", "pack", "unpack", "read_header", "read_section", "header_size",
    *sorted(_IMAGE_NAMES),
]


def __getattr__(name: str):
    if name in _IMAGE_NAMES:
        from . import images

        value = getattr(images, name)
        globals()[name] = value   # found directly from now on
        return value
    raise AttributeError(f"module 'formats' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | _IMAGE_NAMES)
