"""File formats for vaez: the ``.vaez`` container and input/output image handling."""

from .images import (ImageError, LoadedImage, OutputExistsError, atomic_write, check_output_path,
                     decode_alpha, encode_alpha, encode_image, image_format, load_image,
                     save_image, to_pil)
from .vaez import (HEADER_SIZE, MAGIC, MAX_PIXELS, MAX_SIDE, VERSION, VaezError, VaezHeader,
                   pack, read_header, unpack)

__all__ = [
    "MAGIC", "VERSION", "HEADER_SIZE", "MAX_PIXELS", "MAX_SIDE",
    "VaezError", "VaezHeader", "pack", "unpack", "read_header",
    "ImageError", "LoadedImage", "load_image", "to_pil", "encode_alpha", "decode_alpha",
    "OutputExistsError", "image_format", "encode_image", "check_output_path", "atomic_write",
    "save_image",
]
