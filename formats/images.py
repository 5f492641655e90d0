"""Image I/O: turn any supported input into 8-bit pixels + alpha + metadata, and back.

Input rules (``load_image``):

* Sources: a ``PIL.Image.Image``, a numpy array, a path (``str``/``PathLike``)
  or the encoded file as ``bytes``.  The input is never modified.
* Animated images: only the first frame is used.
* EXIF orientation is applied (``ImageOps.exif_transpose``); the returned EXIF
  then has its orientation tag set to 1.  EXIF bytes always start with
  ``b"Exif\\0\\0"``.
* Modes: ``L``, ``RGB``, ``LA``, ``RGBA`` are kept.  ``1`` -> ``L``;
  ``P`` -> ``RGBA`` if it has transparency, else ``RGB``; ``PA`` -> ``RGBA``;
  premultiplied ``La``/``RGBa`` -> un-premultiplied ``LA``/``RGBA``;
  ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``, ``RGBX`` -> ``RGB``; 16-bit
  (``I;16*``) and ``I`` -> ``L`` via round(v * 255 / 65535) (``I`` clipped to
  0..65535 first); ``F`` -> ``L`` clipped to 0..255 and rounded.
* ICC profile: kept when its colour space matches the output (``RGB `` for
  RGB/RGBA, ``GRAY`` for L/LA), otherwise dropped.  A CMYK or Lab image with
  a CMYK/Lab profile is colour-managed to sRGB with it; after that or any
  other change of colour space (CMYK, YCbCr, LAB, HSV) no profile is kept.
* numpy arrays: ``uint8`` HxW or HxWx1 -> L, HxWx2 -> LA, HxWx3 -> RGB,
  HxWx4 -> RGBA; ``uint16`` scaled like 16-bit images; ``bool`` -> 0/255.
  Other dtypes, shapes, or empty arrays are refused.
* Size: at most ``MAX_SIDE`` pixels per side and ``MAX_PIXELS`` in total.
  Pillow's decompression-bomb warning is silenced (our limit applies) but its
  error (over ``2 * Image.MAX_IMAGE_PIXELS``) is reported as ImageError.
* Every problem (missing file, directory, corrupt or unsupported data, empty
  image) raises :class:`ImageError` with one message naming the input.

Output (``image_format``, ``encode_image``, ``atomic_write``, ``save_image``):
the format follows the file extension (PNG without one) and is written
losslessly where the format allows it; files are written atomically and are
only replaced when asked to (``force``).  The CLI writes every output this way.
"""

from __future__ import annotations

import errno
import io
import os
import secrets
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageCms, ImageOps, features

from .vaez import MAX_PIXELS, MAX_SIDE, VaezError

__all__ = ["ImageError", "LoadedImage", "load_image", "to_pil", "encode_alpha",
           "decode_alpha", "OutputExistsError", "image_format", "encode_image",
           "check_output_path", "atomic_write", "save_image"]

MODES = ("L", "RGB", "LA", "RGBA")
_TO_RGB = ("CMYK", "YCbCr", "LAB", "HSV", "RGBX")
_ORIENTATION = 0x0112
_EXIF_PREFIX = b"Exif\0\0"
_ICC_SPACE = {"L": b"GRAY", "LA": b"GRAY", "RGB": b"RGB ", "RGBA": b"RGB "}
_MANAGED_SPACE = {"CMYK": b"CMYK", "LAB": b"Lab "}  # converted to sRGB with their profile


class ImageError(ValueError):
    """The input image cannot be read or is not supported; the message says why."""


@dataclass
class LoadedImage:
    """8-bit pixels plus what is needed to restore the image on decode."""

    pixels: np.ndarray  # HxWx3 (colour) or HxW (grey) uint8, C-contiguous
    alpha: np.ndarray | None  # HxW uint8, or None
    mode: str  # "L", "RGB", "LA" or "RGBA"
    icc_profile: bytes | None = None
    exif: bytes | None = None

    @property
    def width(self) -> int:
        return self.pixels.shape[1]

    @property
    def height(self) -> int:
        return self.pixels.shape[0]


# ----------------------------------------------------------------------- load

def load_image(source) -> LoadedImage:
    """Load ``source`` (PIL image, numpy array, path or bytes) following the module rules."""
    if isinstance(source, np.ndarray):
        return _from_array(source)
    if isinstance(source, Image.Image):
        return _guarded(_from_pil, source, "PIL image")
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _open_and_load(io.BytesIO(bytes(source)), "<bytes>")
    if isinstance(source, (str, os.PathLike)):
        name = os.fsdecode(source)
        if not os.path.exists(name):
            raise ImageError(f"{name}: no such file")
        if os.path.isdir(name):
            raise ImageError(f"{name}: is a directory, not an image file")
        return _open_and_load(name, name)
    raise ImageError(f"cannot load an image from {type(source).__name__}")


def _open_and_load(fp, name: str) -> LoadedImage:
    def open_and_convert(fp, name):
        with Image.open(fp) as im:
            return _from_pil(im, name)
    return _guarded(open_and_convert, fp, name)


def _guarded(fn, source, name: str) -> LoadedImage:
    """Run fn(source, name), turning any failure into one ImageError naming the input."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return fn(source, name)
    except ImageError:
        raise
    except Exception as exc:  # Pillow raises many types for bad files
        raise ImageError(f"{name}: cannot read image ({type(exc).__name__}: {exc})") from None


def _check_size(size: tuple[int, int], name: str) -> None:
    w, h = size
    if w < 1 or h < 1:
        raise ImageError(f"{name}: image is empty ({w}x{h})")
    if w > MAX_SIDE or h > MAX_SIDE or w * h > MAX_PIXELS:
        raise ImageError(f"{name}: image {w}x{h} exceeds the limit "
                         f"({MAX_SIDE} per side, {MAX_PIXELS} pixels)")


def _from_pil(im: Image.Image, name: str) -> LoadedImage:
    _check_size(im.size, name)
    if getattr(im, "is_animated", False) and im.tell() != 0:
        pos = im.tell()
        im.seek(0)
        frame = im.copy()
        im.seek(pos)  # leave the caller's image where it was
    else:
        frame = im
    raw_exif = frame.info.get("exif")
    orientation = frame.getexif().get(_ORIENTATION, 1)
    out = ImageOps.exif_transpose(frame)  # always a new image
    exif = raw_exif if isinstance(raw_exif, bytes) and raw_exif else None
    if exif is not None and orientation in range(2, 9):  # exif_transpose applied it
        fixed = Image.Exif()
        fixed.load(exif)
        fixed[_ORIENTATION] = 1
        exif = fixed.tobytes()
    if exif is not None and not exif.startswith(_EXIF_PREFIX):
        exif = _EXIF_PREFIX + exif
    icc = frame.info.get("icc_profile") or None
    rgb_or_grey, alpha, mode, icc = _convert(out, icc)
    return LoadedImage(pixels=rgb_or_grey, alpha=alpha, mode=mode, icc_profile=icc, exif=exif)


def _icc_space(icc: bytes | None) -> bytes | None:
    return icc[16:20] if icc and len(icc) >= 128 else None


def _convert(im: Image.Image, icc: bytes | None):
    """Apply the mode rules; returns (pixels, alpha, mode, icc_profile)."""
    src = im.mode
    if src in _MANAGED_SPACE and _icc_space(icc) == _MANAGED_SPACE[src]:
        im, icc = _to_srgb(im, icc), None
    if src in MODES:
        pass
    elif src == "1":
        im = im.convert("L")
    elif src == "P":
        im = im.convert("RGBA" if im.has_transparency_data else "RGB")
    elif src == "PA":
        im = im.convert("RGBA")
    elif src in ("La", "RGBa"):
        return _finish(_unpremultiply(np.asarray(im)), src[:-1] + "A", icc)
    elif src in _TO_RGB:
        if src != "RGBX":
            icc = None  # the pixels leave the colour space the profile describes
        im = im.convert("RGB")
    elif src == "I" or src.startswith("I;16"):
        v = np.clip(np.asarray(im).astype(np.int64), 0, 65535)
        return _finish(((v * 255 + 32767) // 65535).astype(np.uint8), "L", icc)
    elif src == "F":
        v = np.nan_to_num(np.asarray(im, dtype=np.float64), nan=0.0)
        return _finish(np.floor(np.clip(v, 0, 255) + 0.5).astype(np.uint8), "L", icc)
    else:
        raise ImageError(f"unsupported image mode {src!r}")
    return _finish(np.asarray(im), im.mode, icc)


def _to_srgb(im: Image.Image, icc: bytes) -> Image.Image:
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except Exception:  # broken profile: fall back to Pillow's plain conversion
        return im.convert("RGB")


def _unpremultiply(arr: np.ndarray) -> np.ndarray:
    a = arr[..., -1:].astype(np.uint32)
    c = arr[..., :-1].astype(np.uint32)
    straight = np.where(a > 0, np.minimum((c * 255 + a // 2) // np.maximum(a, 1), 255), 0)
    return np.concatenate([straight, a], axis=-1).astype(np.uint8)


def _finish(arr: np.ndarray, mode: str, icc: bytes | None):
    if mode in ("LA", "RGBA"):
        pixels, alpha = arr[..., :-1], np.ascontiguousarray(arr[..., -1])
        if mode == "LA":
            pixels = pixels[..., 0]
    else:
        pixels, alpha = arr, None
    if icc is not None and _icc_space(icc) != _ICC_SPACE[mode]:
        icc = None
    return np.array(pixels, dtype=np.uint8, order="C"), alpha, mode, icc


def _from_array(arr: np.ndarray) -> LoadedImage:
    if arr.size == 0:
        raise ImageError(f"array is empty (shape {arr.shape})")
    if arr.ndim == 2:
        mode = "L"
    elif arr.ndim == 3 and 1 <= arr.shape[2] <= 4:
        mode = ("L", "LA", "RGB", "RGBA")[arr.shape[2] - 1]
    else:
        raise ImageError(f"unsupported array shape {arr.shape}; expected HxW or HxWxC with C in 1..4")
    _check_size((arr.shape[1], arr.shape[0]), "array")
    if arr.dtype == np.uint8:
        v = np.array(arr, copy=True)
    elif arr.dtype == np.bool_:
        v = arr.astype(np.uint8) * 255
    elif arr.dtype.kind == "u" and arr.dtype.itemsize == 2:
        v = ((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    else:
        raise ImageError(f"unsupported array dtype {arr.dtype}; expected uint8, uint16 or bool")
    if v.ndim == 3 and v.shape[2] == 1:
        v = v[..., 0]
    pixels, alpha, mode, _ = _finish(v, mode, None)
    return LoadedImage(pixels=pixels, alpha=alpha, mode=mode)


# ---------------------------------------------------------------------- build

def to_pil(pixels: np.ndarray, alpha: np.ndarray | None, mode: str,
           icc_profile: bytes | None = None, exif: bytes | None = None) -> Image.Image:
    """Build a PIL image of ``mode`` from uint8 pixels (HxW or HxWx3) and optional alpha."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8:
        raise ValueError(f"pixels must be uint8, not {pixels.dtype}")
    want = 2 if mode in ("L", "LA") else 3
    if pixels.ndim != want or (want == 3 and pixels.shape[2] != 3) or pixels.size == 0:
        raise ValueError(f"pixels of shape {pixels.shape} do not fit mode {mode}")
    im = Image.fromarray(np.ascontiguousarray(pixels))
    if mode in ("LA", "RGBA"):
        if alpha is None:
            raise ValueError(f"mode {mode} needs an alpha plane")
        alpha = np.asarray(alpha)
        if alpha.dtype != np.uint8 or alpha.shape != pixels.shape[:2]:
            raise ValueError(f"alpha must be uint8 of shape {pixels.shape[:2]}, "
                             f"got {alpha.dtype} {alpha.shape}")
        im.putalpha(Image.fromarray(np.ascontiguousarray(alpha)))
    elif alpha is not None:
        raise ValueError(f"mode {mode} has no alpha, but an alpha plane was given")
    if icc_profile:
        im.info["icc_profile"] = bytes(icc_profile)
    if exif:
        im.info["exif"] = bytes(exif)
    return im


# ---------------------------------------------------------------------- alpha

def encode_alpha(alpha: np.ndarray) -> bytes:
    """Losslessly encode an HxW uint8 alpha plane as a grey PNG."""
    alpha = np.asarray(alpha)
    if alpha.dtype != np.uint8 or alpha.ndim != 2 or alpha.size == 0:
        raise ValueError(f"alpha must be a non-empty HxW uint8 array, got {alpha.dtype} {alpha.shape}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(alpha)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def decode_alpha(data: bytes, width: int, height: int) -> np.ndarray:
    """Decode an ALPH payload; raises VaezError unless it is an 8-bit grey PNG of width x height."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(bytes(data)), formats=["PNG"]) as im:
                if im.mode != "L" or im.size != (width, height):
                    raise VaezError(f"ALPH section: expected a {width}x{height} L PNG, "
                                    f"got {im.size[0]}x{im.size[1]} {im.mode}")
                im.load()
                return np.array(im, dtype=np.uint8)
    except VaezError:
        raise
    except Exception as exc:
        raise VaezError(f"ALPH section: cannot decode alpha PNG ({type(exc).__name__}: {exc})") from None


# ----------------------------------------------------------------------- save

# Encoder options per Pillow format: lossless wherever the format has a lossless mode.
# PNG: zlib's run-length strategy on top of PNG's row filters. On decoded photos (the 24
# Kodak images after a default vaez round trip) it writes 1.4% more bytes than Pillow's
# default (level 6) in a quarter of the time: 23 against 100 ms per 768x512 image, the
# largest cost of `vaez decompress` after the decode itself. `compress_type` is the zlib
# strategy Pillow hands to its encoder; a Pillow without it would use level 1 (+3.4%, 27 ms).
_SAVE_OPTIONS = {
    "PNG": {"compress_level": 1, "compress_type": 3},   # 3 = Z_RLE
    "WEBP": {"lossless": True, "exact": True},
    "JPEG": {"quality": 95},
    "JPEG2000": {"irreversible": False},
}


class OutputExistsError(FileExistsError):
    """``atomic_write`` without ``force`` found something at the target path."""


def image_format(path) -> str:
    """The Pillow format for the extension of ``path`` (any case); ``"PNG"`` without one.

    Raises ImageError for an extension Pillow does not know or cannot write.
    """
    path = os.fsdecode(path)
    ext = os.path.splitext(path)[1].lower()
    if not ext:
        return "PNG"
    fmt = Image.registered_extensions().get(ext)
    if fmt is None or fmt not in Image.SAVE:
        raise ImageError(f"{path}: unknown or unsupported image file extension {ext!r}")
    return fmt


def _save_options(fmt: str) -> dict:
    options = dict(_SAVE_OPTIONS.get(fmt, {}))
    if fmt == "TIFF" and features.check("libtiff"):
        options["compression"] = "tiff_deflate"  # lossless and much smaller than raw
    return options


def encode_image(image: Image.Image, fmt: str, f) -> None:
    """Write ``image`` to the binary file object ``f`` in Pillow format ``fmt``.

    Lossless wherever the format has a lossless mode (WebP lossless, JPEG 2000
    reversible, TIFF deflate); JPEG at quality 95.  The ICC profile and EXIF in
    ``image.info`` are passed on (formats that cannot hold them ignore them).
    Raises ImageError when the image or its metadata cannot be stored in ``fmt``
    (a mode the format lacks, a malformed EXIF payload, ...); an OSError with an
    errno (disk full, ...) propagates unchanged.
    """
    options = _save_options(fmt)
    for key in ("icc_profile", "exif"):
        if image.info.get(key):
            options[key] = image.info[key]
    try:
        image.save(f, format=fmt, **options)
        return
    except OSError as exc:
        if exc.errno is not None:
            raise
        problem = exc  # Pillow's "cannot write mode RGBA as JPEG" and the like
    except (ValueError, KeyError, TypeError, SyntaxError, struct.error) as exc:
        problem = exc  # SyntaxError, struct.error: a malformed EXIF block (TIFF, AVIF parse it)
    kind = type(problem)
    name = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"
    text = " ".join(f"{name}: {problem}".split())
    raise ImageError(f"cannot save a {image.mode} image as {fmt} ({text})") from None


def check_output_path(path, force: bool = False) -> None:
    """Raise OSError unless ``atomic_write(path, ..., force)`` may write ``path``.

    Refused: a directory (IsADirectoryError), anything else that exists and is
    not a regular file (OSError EINVAL; never replaced, even with ``force``), an
    existing path without ``force`` (OutputExistsError), and a missing parent
    directory (FileNotFoundError) or a parent that is not a directory
    (NotADirectoryError).  Every error carries ``path`` as its filename.
    """
    path = os.fsdecode(path)
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, "is a directory", path)
    if os.path.exists(path) and not os.path.isfile(path):
        raise OSError(errno.EINVAL, "exists and is not a regular file; not replacing it", path)
    if not force and os.path.lexists(path):
        raise OutputExistsError(errno.EEXIST, "already exists", path)
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        if os.path.exists(folder):
            raise NotADirectoryError(errno.ENOTDIR, f"{folder} is not a directory", path)
        raise FileNotFoundError(errno.ENOENT, f"directory {folder} does not exist", path)


def atomic_write(path, write, force: bool = False) -> None:
    """Call ``write(f)`` on a new temporary file next to ``path``, then move it into place.

    The data are flushed and fsync'ed before the file appears under ``path``.
    ``check_output_path`` rules apply first.  Without ``force`` an existing
    ``path`` is never replaced: the file is hard-linked into place, which fails
    atomically if another writer got there first (on file systems without hard
    links: check, then rename), raising OutputExistsError.  With ``force`` it is
    renamed over ``path``.  On any failure or interrupt the temporary file is
    removed, ``path`` is left as it was and the exception propagates (OSError
    from the file system, or whatever ``write`` raised).
    """
    path = os.fsdecode(path)
    check_output_path(path, force)
    folder = os.path.dirname(path) or "."
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    tmp_made = False
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        tmp_made = True
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if force:
            os.replace(tmp, path)
            tmp_made = False
        else:
            try:
                os.link(tmp, path)  # fails if path exists: no race with another writer
            except FileExistsError:
                raise OutputExistsError(errno.EEXIST, "already exists", path) from None
            except OSError:  # no hard links on this file system: check, then rename
                if os.path.lexists(path):
                    raise OutputExistsError(errno.EEXIST, "already exists", path) from None
                os.replace(tmp, path)
                tmp_made = False
    except BaseException:
        if tmp_made:
            _remove_quietly(tmp)
        raise
    if tmp_made:  # linked into place: drop the temporary name
        _remove_quietly(tmp)


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def save_image(image: Image.Image, path, force: bool = True) -> None:
    """Write ``image`` to ``path`` with ``atomic_write`` and ``encode_image``.

    The format comes from the extension (``image_format``; PNG if none).  An
    existing file is replaced unless ``force`` is false.  Every failure raises
    ImageError naming ``path``; the temporary file is then removed and an
    existing file at ``path`` is left untouched.
    """
    path = os.fsdecode(path)
    try:
        fmt = image_format(path)
        atomic_write(path, lambda f: encode_image(image, fmt, f), force)
    except ImageError as exc:
        text = str(exc)
        raise ImageError(text if text.startswith(path) else f"{path}: {text}") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot write ({exc.strerror or exc})") from None
