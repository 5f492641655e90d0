"""File formats for vaez: the ``.vaez`` container and input/output image handling."""

from .images import (ImageError, LoadedImage, OutputExistsError, atomic_write, check_output_path,
                     decode_alpha, encode_alpha, encode_image, image_format, load_image,
                     save_image, to_pil)
from .vaez import (HEADER_SIZE, MAGIC, MAX_HEADER_SIZE, MAX_PIXELS, MAX_SIDE, VERSION, VERSIONS,
                   VaezError, VaezHeader, header_size, pack, read_header, read_section, unpack)

__all__ = [
    "MAGIC", "VERSION", "VERSIONS", "HEADER_SIZE", "MAX_HEADER_SIZE", "MAX_PIXELS", "MAX_SIDE",
    "VaezError", "VaezHeader", "pack", "unpack", "read_header", "read_section", "header_size",
    "ImageError", "LoadedImage", "load_image", "to_pil", "encode_alpha", "decode_alpha",
    "OutputExistsError", "image_format", "encode_image", "check_output_path", "atomic_write",
    "save_image",
]
