"""The ``.vaez`` container: pack and unpack a fixed header plus named byte sections.

This module only knows the byte layout described in ``VAEZ.md``; it never
interprets the entropy-coded streams.  ``unpack`` and ``read_header`` are
strict: any malformed input raises :class:`VaezError` (a ``ValueError``) with
a message naming the problem, before anything large is allocated.
"""

from __future__ import annotations

import math
import operator
import os
import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO

__all__ = [
    "MAGIC", "VERSION", "HEADER_SIZE", "MAX_SIDE", "MAX_PIXELS", "MAX_LATENT_CHANNELS",
    "MAX_MODEL_ID_BYTES", "MODES", "CODERS", "KNOWN_SECTIONS", "SECTION_ORDER",
    "VaezError", "VaezHeader", "pack", "unpack", "read_header",
]

MAGIC = b"\x89VAEZ\r\n\x1a"  # 8 bytes; the format version follows in byte 8
VERSION = 1

MAX_SIDE = 65535  # image width and height, and each latent spatial dimension
MAX_PIXELS = 2**28  # width * height
MAX_LATENT_CHANNELS = 4096
MAX_MODEL_ID_BYTES = 32
MODEL_DIGEST_BYTES = 8

MODES = ("L", "RGB", "LA", "RGBA")  # header code = index
CODERS = ("constriction", "huffman")  # header code = index
ALPHA_MODES = ("LA", "RGBA")

# Known sections in the canonical order pack() writes them.  Unknown ancillary
# sections (first letter lower-case) follow, sorted by tag; END closes the file.
SECTION_ORDER = ("ICCP", "EXIF", "ALPH", "ZSYM", "YSYM", "YSYN")
KNOWN_SECTIONS = frozenset(SECTION_ORDER)
REQUIRED_SECTIONS = ("ZSYM", "YSYM")
END_TAG = "END "

# magic, version, mode, coder, pad8, width, height, quality*100, pad16,
# model_id, model_digest, y_shape (c, h, w), z_shape (c, h, w), symbol_crc
_HEADER = struct.Struct("<8sBBBBIIHH32s8s3H3HI")
_CRC = struct.Struct("<I")
HEADER_SIZE = _HEADER.size + _CRC.size  # 84
_SECTION_HEAD = struct.Struct("<I4s")  # payload length, tag
_SECTION_OVERHEAD = _SECTION_HEAD.size + _CRC.size  # 12
_TAG_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 ")


class VaezError(ValueError):
    """The bytes are not a valid .vaez file; the message says what is wrong."""


@dataclass(frozen=True)
class VaezHeader:
    """Everything in the fixed header of a .vaez file."""

    width: int
    height: int
    mode: str
    quality: float
    coder: str
    model_id: str
    model_digest: bytes
    y_shape: tuple[int, int, int]
    z_shape: tuple[int, int, int]
    symbol_crc: int

    @property
    def has_alpha(self) -> bool:
        return self.mode in ALPHA_MODES


# ----------------------------------------------------------------- validation

def _is_ancillary(tag: str) -> bool:
    return tag[0].islower()


def _tag_problem(tag: bytes) -> str | None:
    if len(tag) != 4 or not set(tag) <= _TAG_CHARS or not chr(tag[0]).isalpha():
        return f"invalid section tag {tag!r} (need 4 ASCII letters/digits/spaces, first a letter)"
    return None


def _model_id_problem(raw: bytes) -> str | None:
    if not 1 <= len(raw) <= MAX_MODEL_ID_BYTES:
        return f"model_id must be 1..{MAX_MODEL_ID_BYTES} bytes, got {len(raw)}"
    if any(b < 0x20 or b > 0x7E for b in raw):
        return f"model_id {raw!r} is not printable ASCII"
    return None


def _header_problem(h: VaezHeader) -> str | None:
    """Range checks shared by pack() and unpack(); assumes plain int/str/bytes fields."""
    if not (1 <= h.width <= MAX_SIDE and 1 <= h.height <= MAX_SIDE):
        return f"dimensions {h.width}x{h.height} outside 1..{MAX_SIDE}"
    if h.width * h.height > MAX_PIXELS:
        return f"dimensions {h.width}x{h.height} exceed the limit of {MAX_PIXELS} pixels"
    if h.mode not in MODES:
        return f"unknown mode {h.mode!r} (expected one of {', '.join(MODES)})"
    if h.coder not in CODERS:
        return f"unknown coder {h.coder!r} (expected one of {', '.join(CODERS)})"
    if not (1 <= h.quality <= 100):  # also false for NaN
        return f"quality {h.quality} outside 1..100"
    for name, shape in (("y_shape", h.y_shape), ("z_shape", h.z_shape)):
        c, hh, ww = shape
        if not (1 <= c <= MAX_LATENT_CHANNELS and 1 <= hh <= MAX_SIDE and 1 <= ww <= MAX_SIDE):
            return (f"{name} {tuple(shape)} out of range (channels 1..{MAX_LATENT_CHANNELS}, "
                    f"height/width 1..{MAX_SIDE})")
    if not 0 <= h.symbol_crc <= 0xFFFFFFFF:
        return f"symbol_crc {h.symbol_crc} is not a uint32"
    return None


def _normalized(h: VaezHeader) -> VaezHeader:
    """Coerce user-supplied header fields to plain types, raising ValueError on bad ones."""
    if not isinstance(h, VaezHeader):
        raise TypeError(f"header must be a VaezHeader, not {type(h).__name__}")
    try:
        ints = {k: operator.index(getattr(h, k)) for k in ("width", "height", "symbol_crc")}
        shapes = {k: tuple(operator.index(v) for v in getattr(h, k)) for k in ("y_shape", "z_shape")}
        quality = float(h.quality)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"bad header field type: {exc}") from None
    for k, shape in shapes.items():
        if len(shape) != 3:
            raise ValueError(f"{k} must have 3 entries (channels, height, width), got {len(shape)}")
    if not isinstance(h.mode, str) or not isinstance(h.coder, str) or not isinstance(h.model_id, str):
        raise ValueError("mode, coder and model_id must be str")
    if not math.isfinite(quality) or round(quality * 100) / 100 != quality:
        raise ValueError(f"quality {h.quality!r} is not a multiple of 0.01 (use round(q, 2))")
    digest = h.model_digest
    if not isinstance(digest, (bytes, bytearray, memoryview)) or len(bytes(digest)) != MODEL_DIGEST_BYTES:
        raise ValueError(f"model_digest must be exactly {MODEL_DIGEST_BYTES} bytes")
    try:
        raw_id = h.model_id.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"model_id {h.model_id!r} is not ASCII") from None
    problem = _model_id_problem(raw_id)
    if problem:
        raise ValueError(problem)
    out = VaezHeader(width=ints["width"], height=ints["height"], mode=h.mode, quality=quality,
                     coder=h.coder, model_id=h.model_id, model_digest=bytes(digest),
                     y_shape=shapes["y_shape"], z_shape=shapes["z_shape"],
                     symbol_crc=ints["symbol_crc"])
    problem = _header_problem(out)
    if problem:
        raise ValueError(problem)
    return out


def _section_set_problem(tags: set[str], mode: str) -> str | None:
    for tag in REQUIRED_SECTIONS:
        if tag not in tags:
            return f"missing required section {tag}"
    if mode in ALPHA_MODES and "ALPH" not in tags:
        return f"missing required section ALPH (mode {mode} has alpha)"
    if mode not in ALPHA_MODES and "ALPH" in tags:
        return f"unexpected ALPH section (mode {mode} has no alpha)"
    return None


# ---------------------------------------------------------------------- write

def _section(tag: str, payload: bytes) -> bytes:
    t = tag.encode("ascii")
    return _SECTION_HEAD.pack(len(payload), t) + payload + _CRC.pack(zlib.crc32(payload, zlib.crc32(t)))


def pack(header: VaezHeader, sections: dict[str, bytes]) -> bytes:
    """Serialize ``header`` and ``sections`` into .vaez bytes (canonical section order).

    Raises ValueError for invalid header values, unknown critical tags, or a
    section set that does not match the mode (ZSYM/YSYM required, ALPH iff alpha).
    """
    h = _normalized(header)
    payloads: dict[str, bytes] = {}
    for tag, payload in sections.items():
        if not isinstance(tag, str) or not tag.isascii():
            raise ValueError(f"section tag {tag!r} must be a 4-character ASCII str")
        problem = _tag_problem(tag.encode("ascii"))
        if problem:
            raise ValueError(problem)
        if tag == END_TAG:
            raise ValueError("the END section is written by pack() itself")
        if tag not in KNOWN_SECTIONS and not _is_ancillary(tag):
            raise ValueError(f"unknown critical section {tag!r} (ancillary tags start lower-case)")
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise ValueError(f"section {tag} payload must be bytes, not {type(payload).__name__}")
        payload = bytes(payload)
        if len(payload) > 0xFFFFFFFF:
            raise ValueError(f"section {tag} is too large ({len(payload)} bytes)")
        payloads[tag] = payload
    problem = _section_set_problem(set(payloads), h.mode)
    if problem:
        raise ValueError(problem)

    fields = _HEADER.pack(
        MAGIC, VERSION, MODES.index(h.mode), CODERS.index(h.coder), 0,
        h.width, h.height, round(h.quality * 100), 0,
        h.model_id.encode("ascii"), h.model_digest, *h.y_shape, *h.z_shape, h.symbol_crc)
    order = [t for t in SECTION_ORDER if t in payloads]
    order += sorted(t for t in payloads if t not in KNOWN_SECTIONS)
    parts = [fields, _CRC.pack(zlib.crc32(fields))]
    parts += [_section(t, payloads[t]) for t in order]
    parts.append(_section(END_TAG, b""))
    return b"".join(parts)


# ----------------------------------------------------------------------- read

def _parse_header(data: bytes) -> VaezHeader:
    """Validate and decode the first HEADER_SIZE bytes of ``data``."""
    prefix = bytes(data[:len(MAGIC)])
    if prefix != MAGIC[:len(prefix)]:
        raise VaezError("not a .vaez file (bad magic)")
    if len(data) < HEADER_SIZE:
        raise VaezError(f"truncated header: got {len(data)} of {HEADER_SIZE} bytes")
    if data[8] != VERSION:
        raise VaezError(f"unsupported version {data[8]} (this reader supports version {VERSION})")
    fields = bytes(data[:_HEADER.size])
    (stored_crc,) = _CRC.unpack_from(data, _HEADER.size)
    if zlib.crc32(fields) != stored_crc:
        raise VaezError("CRC mismatch in header")
    (_, _, mode, coder, pad8, width, height, centi, pad16, raw_id, digest,
     yc, yh, yw, zc, zh, zw, symbol_crc) = _HEADER.unpack(fields)
    if pad8 or pad16:
        raise VaezError("non-zero padding bytes in header")
    if mode >= len(MODES):
        raise VaezError(f"unknown mode code {mode}")
    if coder >= len(CODERS):
        raise VaezError(f"unknown coder code {coder}")
    model_id = raw_id.rstrip(b"\0")
    problem = _model_id_problem(model_id)
    if problem:
        raise VaezError(problem)
    header = VaezHeader(width=width, height=height, mode=MODES[mode], quality=centi / 100,
                        coder=CODERS[coder], model_id=model_id.decode("ascii"),
                        model_digest=digest, y_shape=(yc, yh, yw), z_shape=(zc, zh, zw),
                        symbol_crc=symbol_crc)
    problem = _header_problem(header)
    if problem:
        raise VaezError(problem)
    return header


def unpack(data: bytes) -> tuple[VaezHeader, dict[str, bytes]]:
    """Parse and fully validate .vaez bytes; returns the header and known sections.

    Unknown ancillary sections are checked (CRC) and dropped.  Raises
    VaezError for any malformed input, never another exception type.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise VaezError(f"expected bytes, got {type(data).__name__}")
    view = memoryview(data if isinstance(data, bytes) else bytes(data))
    header = _parse_header(view)
    sections: dict[str, bytes] = {}
    seen: set[str] = set()
    pos, end = HEADER_SIZE, len(view)
    while True:
        if end - pos < _SECTION_OVERHEAD:
            what = "missing END section" if pos == end else "section header cut off"
            raise VaezError(f"truncated at byte {end}: {what}")
        length, raw_tag = _SECTION_HEAD.unpack_from(view, pos)
        problem = _tag_problem(raw_tag)
        if problem:
            raise VaezError(f"{problem} at byte {pos}")
        tag = raw_tag.decode("ascii")
        if length > end - pos - _SECTION_OVERHEAD:
            raise VaezError(f"truncated: section {tag} declares {length} bytes "
                            f"but only {end - pos - _SECTION_OVERHEAD} remain")
        body = view[pos + 4:pos + 8 + length]  # tag + payload
        (stored_crc,) = _CRC.unpack_from(view, pos + 8 + length)
        if zlib.crc32(body) != stored_crc:
            raise VaezError(f"CRC mismatch in section {tag}")
        pos += _SECTION_OVERHEAD + length
        if tag in seen:
            raise VaezError(f"duplicate section {tag}")
        seen.add(tag)
        if tag == END_TAG:
            if length:
                raise VaezError(f"END section must be empty, has {length} bytes")
            break
        if tag in KNOWN_SECTIONS:
            sections[tag] = bytes(body[4:])
        elif not _is_ancillary(tag):
            raise VaezError(f"unknown critical section {tag}")
    if pos != end:
        raise VaezError(f"{end - pos} trailing bytes after END section")
    problem = _section_set_problem(set(sections), header.mode)
    if problem:
        raise VaezError(problem)
    return header, sections


def read_header(source: bytes | str | os.PathLike | BinaryIO) -> VaezHeader:
    """Read and validate only the fixed header from bytes, a path or a binary file.

    A file object is read from its current position.  OSError from opening a
    path propagates unchanged; malformed content raises VaezError.
    """
    if isinstance(source, (bytes, bytearray)):
        head = bytes(source[:HEADER_SIZE])
    elif isinstance(source, memoryview):
        head = source.tobytes()[:HEADER_SIZE]
    elif isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            head = _read_up_to(f, HEADER_SIZE)
    elif hasattr(source, "read"):
        head = _read_up_to(source, HEADER_SIZE)
    else:
        raise TypeError(f"cannot read a header from {type(source).__name__}")
    return _parse_header(head)


def _read_up_to(f: BinaryIO, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = f.read(n - got)
        if not chunk:
            break
        if not isinstance(chunk, (bytes, bytearray)):
            raise TypeError("file object must be opened in binary mode")
        chunks.append(bytes(chunk))
        got += len(chunk)
    return b"".join(chunks)
