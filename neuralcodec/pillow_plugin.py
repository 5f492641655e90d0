"""Pillow plugin: ``Image.open("x.vaez")`` and ``im.save("x.vaez")`` through the vaez codec.

One job: translate between Pillow's plugin conventions and the codec, so programs that only know
Pillow can read and write ``.vaez`` files. It exists as its own module because Pillow's rules
(an ``ImageFile`` subclass, ``_accept`` on the magic bytes, a ``_save`` handler, registration
by format id) have nothing to do with how the codec works.

Opening is cheap: ``_open`` reads the header (size, mode, quality, coder, model) and the
ICC/EXIF sections that the container places right after it, and nothing else. The pixels are
decoded on ``load()``, the first time they are needed; only then is the model loaded (decoding
never imports torch), so ``import neuralcodec`` (which registers this plugin) stays light.
"""
from __future__ import annotations

from PIL import Image, ImageFile

import formats

from .efforts import DEFAULT_EFFORT

__all__ = ["FORMAT", "EXTENSION", "MIME", "VaezImageFile", "register"]

FORMAT = "VAEZ"
EXTENSION = ".vaez"
MIME = "image/x-vaez"

_METADATA_SECTIONS = {"ICCP": "icc_profile", "EXIF": "exif"}
_METADATA_LIMIT = 64 << 20  # never read a metadata section larger than this at open time


def _accept(prefix: bytes) -> bool:
    return prefix[:len(formats.MAGIC)] == formats.MAGIC


def _read_metadata(fp, version: int) -> dict:
    """ICC profile and EXIF from the sections that directly follow the header.

    ``formats.pack`` writes them first, so this reads only a few bytes beyond the header.
    Anything unexpected (another tag, a bad CRC, a short read) just ends the scan: the full
    check happens when the image is decoded.
    """
    found: dict[str, bytes] = {}
    while len(found) < len(_METADATA_SECTIONS):
        wanted = [tag for tag, key in _METADATA_SECTIONS.items() if key not in found]
        section = formats.read_section(fp, version, wanted, _METADATA_LIMIT)
        if section is None:
            break
        found[_METADATA_SECTIONS[section[0]]] = section[1]
    return found


class VaezImageFile(ImageFile.ImageFile):
    """A ``.vaez`` file opened by Pillow: header read at once, pixels decoded on ``load()``."""

    format = FORMAT
    format_description = "vaez learned lossy image"

    def _open(self) -> None:
        self._vaez_start = self.fp.tell()
        try:
            header = formats.read_header(self.fp)
        except formats.VaezError as exc:
            raise SyntaxError(f"not a valid .vaez file: {exc}") from None
        self._size = (header.width, header.height)
        self._mode = header.mode
        self.info.update(quality=header.quality, coder=header.coder, model=header.model_id)
        self.info.update(_read_metadata(self.fp, header.version))
        self.tile = []  # no Pillow decoder: load() below does the work

    def load(self):
        if self._im is None:
            if self.fp is None:
                raise OSError("cannot load this image: its file is closed")
            self.fp.seek(self._vaez_start)
            data = self.fp.read()
            from .codec import default_codec  # the weights load here, not at open

            try:
                image = default_codec().decompress(data)
            except formats.VaezError as exc:
                raise OSError(f"cannot decode .vaez data: {exc}") from exc
            if image.size != self.size or image.mode != self.mode:  # pragma: no cover - codec bug
                raise OSError(f"decoded {image.size} {image.mode}, header says "
                              f"{self.size} {self.mode}")
            self.im = image.im
            for key in ("icc_profile", "exif"):
                if image.info.get(key):
                    self.info[key] = image.info[key]
            self.readonly = 0
            if self._exclusive_fp and self._close_exclusive_fp_after_loading:
                self.fp.close()
            self.fp = None
        return Image.Image.load(self)


def _save(im: Image.Image, fp, filename) -> None:
    """Pillow save handler. Parameters: ``quality`` (1..100, default 75), ``coder``,
    ``target_size`` / ``target_bpp`` / ``target_psnr`` (see ``neuralcodec.compress``),
    ``strip`` (drop ICC and EXIF), ``effort`` (0..3, default 1: encoder speed for size),
    ``icc_profile`` and ``exif`` (replace the image's own)."""
    from . import compress

    params = im.encoderinfo
    source = im
    if "icc_profile" in params or "exif" in params:
        source = im.copy()
        source.info = dict(im.info)
        for key in ("icc_profile", "exif"):
            if key in params:
                value = params[key]
                if isinstance(value, Image.Exif):
                    value = value.tobytes()
                if value:
                    source.info[key] = bytes(value)
                else:
                    source.info.pop(key, None)
    data = compress(source, quality=params.get("quality", 75), coder=params.get("coder", "auto"),
                    target_size=params.get("target_size"), target_bpp=params.get("target_bpp"),
                    target_psnr=params.get("target_psnr"), strip=bool(params.get("strip", False)),
                    effort=params.get("effort", DEFAULT_EFFORT))
    fp.write(data)


def register() -> None:
    """Register the ``VAEZ`` format with Pillow (open, save, ``.vaez`` extension, MIME type).

    Safe to call more than once.
    """
    Image.register_open(FORMAT, VaezImageFile, _accept)
    Image.register_save(FORMAT, _save)
    Image.register_extension(FORMAT, EXTENSION)
    Image.register_mime(FORMAT, MIME)

