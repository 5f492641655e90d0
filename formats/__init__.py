"""File formats for vaez: the ``.vaez`` container and input/output image handling."""

from .images import (ImageError, LoadedImage, decode_alpha, encode_alpha, load_image,
                     save_image, to_pil)
from .vaez import (HEADER_SIZE, MAGIC, MAX_PIXELS, MAX_SIDE, VERSION, VaezError, VaezHeader,
                   pack, read_header, unpack)

__all__ = [
    "MAGIC", "VERSION", "HEADER_SIZE", "MAX_PIXELS", "MAX_SIDE",
    "VaezError", "VaezHeader", "pack", "unpack", "read_header",
    "ImageError", "LoadedImage", "load_image", "to_pil", "encode_alpha", "decode_alpha",
    "save_image",
]
