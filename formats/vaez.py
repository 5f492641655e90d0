"""The ``.vaez`` container: pack and unpack a header plus named byte sections.

This module only knows the byte layout described in ``VAEZ.md``; it never
interprets the entropy-coded streams.  ``unpack`` and ``read_header`` are
strict: any malformed input raises :class:`VaezError` (a ``ValueError``) with
a message naming the problem, before anything large is allocated.

Two layouts: version 1 (a fixed 84-byte header, sections framed by a u32
length) is read for the files written by vaez 1.0 to 1.3; version 2 (the same
fields, variable-length integers, 50 bytes less for a Kodak photo) is written.
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
    "MAGIC", "VERSION", "VERSIONS", "HEADER_SIZE", "MAX_HEADER_SIZE", "MAX_SIDE", "MAX_PIXELS",
    "MAX_LATENT_CHANNELS",
    "MAX_MODEL_ID_BYTES", "MODES", "CODERS", "KNOWN_SECTIONS", "SECTION_ORDER",
    "VaezError", "VaezHeader", "pack", "unpack", "read_header", "header_size", "read_section",
]

MAGIC = b"\x89VAEZ\r\n\x1a"  # 8 bytes; the format version follows in byte 8
VERSION = 2  # what pack() writes unless the header asks for another
VERSIONS = (1, 2)  # what unpack() reads

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
HEADER_SIZE = _HEADER.size + _CRC.size  # 84: version 1's fixed header
_SECTION_HEAD = struct.Struct("<I4s")  # version 1: payload length, tag
# version 2: magic, version, mode | coder << 2, then varints and fixed fields (see VAEZ.md)
_FIXED_V2 = struct.Struct("<8sBB")
_MAX_VARINT_BYTES = 5  # a u32
# version 2's bound: magic+version+flags, width, height, quality, id length + id, digest,
# six shape varints, two CRCs (83 bytes, e.g. 16384x16384); version 1's 84 is longer
MAX_HEADER_SIZE = max(HEADER_SIZE, _FIXED_V2.size + 3 + 3 + 2 + 1 + MAX_MODEL_ID_BYTES
                      + MODEL_DIGEST_BYTES + 2 * (2 + 3 + 3) + 4 + 4)
_TAG_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 ")


class VaezError(ValueError):
    """The bytes are not a valid .vaez file; the message says what is wrong."""


@dataclass(frozen=True)
class VaezHeader:
    """Everything in the header of a .vaez file (the same fields in either version)."""

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
    version: int = VERSION  # the container layout; the same fields in either

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
    if h.version not in VERSIONS:
        return f"unsupported version {h.version} (this reader supports versions 1 and 2)"
    return None


def _normalized(h: VaezHeader) -> VaezHeader:
    """Coerce user-supplied header fields to plain types, raising ValueError on bad ones."""
    if not isinstance(h, VaezHeader):
        raise TypeError(f"header must be a VaezHeader, not {type(h).__name__}")
    try:
        ints = {k: operator.index(getattr(h, k)) for k in ("width", "height", "symbol_crc", "version")}
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
                     symbol_crc=ints["symbol_crc"], version=ints["version"])
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

def _varint(value: int) -> bytes:
    """Unsigned LEB128: 7 bits per byte, least significant group first."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _section(tag: str, payload: bytes, version: int) -> bytes:
    t = tag.encode("ascii")
    crc = _CRC.pack(zlib.crc32(payload, zlib.crc32(t)))
    if version == 1:
        return _SECTION_HEAD.pack(len(payload), t) + payload + crc
    if tag == END_TAG:
        return t  # version 2: the END tag alone closes the file
    return t + _varint(len(payload)) + payload + crc


def _header_bytes(h: VaezHeader) -> bytes:
    """The header of ``h`` (already validated) in its version's layout, CRC included."""
    quality = round(h.quality * 100)
    model_id = h.model_id.encode("ascii")
    if h.version == 1:
        fields = _HEADER.pack(
            MAGIC, 1, MODES.index(h.mode), CODERS.index(h.coder), 0, h.width, h.height,
            quality, 0, model_id, h.model_digest, *h.y_shape, *h.z_shape, h.symbol_crc)
    else:
        fields = b"".join([
            _FIXED_V2.pack(MAGIC, 2, MODES.index(h.mode) | CODERS.index(h.coder) << 2),
            _varint(h.width), _varint(h.height), struct.pack("<HB", quality, len(model_id)),
            model_id, h.model_digest, *map(_varint, (*h.y_shape, *h.z_shape)),
            _CRC.pack(h.symbol_crc)])
    return fields + _CRC.pack(zlib.crc32(fields))


def header_size(header: VaezHeader) -> int:
    """How many bytes ``header`` takes in its file (84 in version 1; 38 to 83 in version 2)."""
    return len(_header_bytes(_normalized(header)))


def pack(header: VaezHeader, sections: dict[str, bytes]) -> bytes:
    """Serialize ``header`` and ``sections`` into .vaez bytes (canonical section order), in the
    layout of ``header.version`` (the current one unless asked otherwise).

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

    order = [t for t in SECTION_ORDER if t in payloads]
    order += sorted(t for t in payloads if t not in KNOWN_SECTIONS)
    parts = [_header_bytes(h)]
    parts += [_section(t, payloads[t], h.version) for t in order]
    parts.append(_section(END_TAG, b"", h.version))
    return b"".join(parts)


# ----------------------------------------------------------------------- read

class _Cursor:
    """Reads fields from a byte view, raising VaezError when they run past its end."""

    def __init__(self, view, pos: int, what: str):
        self.view, self.pos, self.what = view, pos, what

    def take(self, n: int) -> bytes:
        if n > len(self.view) - self.pos:
            raise VaezError(f"truncated {self.what} at byte {len(self.view)}")
        self.pos += n
        return bytes(self.view[self.pos - n:self.pos])

    def varint(self, limit: int, name: str) -> int:
        """A minimally encoded unsigned LEB128 of at most ``limit``."""
        value = shift = 0
        for count in range(_MAX_VARINT_BYTES):
            (byte,) = self.take(1)
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                if count and not byte:
                    raise VaezError(f"{name} at byte {self.pos - 1} is not minimally encoded")
                break
        else:
            raise VaezError(f"{name} at byte {self.pos} is longer than {_MAX_VARINT_BYTES} bytes")
        if value > limit:
            raise VaezError(f"{name} {value} exceeds {limit}")
        return value


def _check_magic_and_version(data) -> int:
    prefix = bytes(data[:len(MAGIC)])
    if prefix != MAGIC[:len(prefix)]:
        raise VaezError("not a .vaez file (bad magic)")
    if len(data) <= len(MAGIC):
        raise VaezError(f"truncated header: got {len(data)} bytes")
    version = data[len(MAGIC)]
    if version not in VERSIONS:
        raise VaezError(f"unsupported version {version} (this reader supports versions 1 and 2; "
                        "a newer vaez may read it)")
    return version


def _parse_header(data) -> tuple[VaezHeader, int]:
    """Validate and decode the header at the start of ``data``: (header, its size in bytes)."""
    version = _check_magic_and_version(data)
    if version == 1:
        if len(data) < HEADER_SIZE:
            raise VaezError(f"truncated header: got {len(data)} of {HEADER_SIZE} bytes")
        fields = bytes(data[:_HEADER.size])
        (stored_crc,) = _CRC.unpack_from(data, _HEADER.size)
        if zlib.crc32(fields) != stored_crc:
            raise VaezError("CRC mismatch in header")
        (_, _, mode, coder, pad8, width, height, centi, pad16, raw_id, digest,
         yc, yh, yw, zc, zh, zw, symbol_crc) = _HEADER.unpack(fields)
        if pad8 or pad16:
            raise VaezError("non-zero padding bytes in header")
        model_id = raw_id.rstrip(b"\0")
        size = HEADER_SIZE
    else:
        # the CRC comes last, so every field is read (bounded) before it can be checked
        cur = _Cursor(data, _FIXED_V2.size - 1, "header")
        (flags,) = cur.take(1)
        mode, coder, reserved = flags & 3, flags >> 2 & 1, flags >> 3
        width = cur.varint(MAX_SIDE, "width")
        height = cur.varint(MAX_SIDE, "height")
        centi, id_length = struct.unpack("<HB", cur.take(3))
        if id_length > MAX_MODEL_ID_BYTES:
            raise VaezError(f"model_id length {id_length} exceeds {MAX_MODEL_ID_BYTES}")
        model_id = cur.take(id_length)
        digest = cur.take(MODEL_DIGEST_BYTES)
        yc, yh, yw, zc, zh, zw = (cur.varint(limit, name) for name, limit in (
            ("y_shape channels", MAX_LATENT_CHANNELS), ("y_shape height", MAX_SIDE),
            ("y_shape width", MAX_SIDE), ("z_shape channels", MAX_LATENT_CHANNELS),
            ("z_shape height", MAX_SIDE), ("z_shape width", MAX_SIDE)))
        (symbol_crc,) = _CRC.unpack(cur.take(4))
        fields_end = cur.pos
        (stored_crc,) = _CRC.unpack(cur.take(4))
        if zlib.crc32(bytes(data[:fields_end])) != stored_crc:
            raise VaezError("CRC mismatch in header")
        if reserved:
            raise VaezError("reserved header bits are set")
        size = cur.pos
    if mode >= len(MODES):
        raise VaezError(f"unknown mode code {mode}")
    if coder >= len(CODERS):
        raise VaezError(f"unknown coder code {coder}")
    if version == 1 and b"\0" in model_id:
        raise VaezError("model_id has bytes after its terminating 00")
    problem = _model_id_problem(model_id)
    if problem:
        raise VaezError(problem)
    header = VaezHeader(width=width, height=height, mode=MODES[mode], quality=centi / 100,
                        coder=CODERS[coder], model_id=model_id.decode("ascii"),
                        model_digest=digest, y_shape=(yc, yh, yw), z_shape=(zc, zh, zw),
                        symbol_crc=symbol_crc, version=version)
    problem = _header_problem(header)
    if problem:
        raise VaezError(problem)
    return header, size


def _section_frame(view, pos: int, version: int) -> tuple[bytes, int | None, int]:
    """The framing of the section at ``pos``: (raw tag, payload length, payload start); the
    length is None for version 2's bare END tag. Raises VaezError when the tag or length is
    cut off or malformed (the payload and CRC are not looked at)."""
    end = len(view)
    head = _SECTION_HEAD.size if version == 1 else 4
    if end - pos < head:
        what = "missing END section" if pos == end else "section header cut off"
        raise VaezError(f"truncated at byte {end}: {what}")
    if version == 1:
        length, raw_tag = _SECTION_HEAD.unpack_from(view, pos)
        start = pos + head
    else:
        raw_tag = bytes(view[pos:pos + 4])
    problem = _tag_problem(raw_tag)
    if problem:
        raise VaezError(f"{problem} at byte {pos}")
    if version == 2:
        if raw_tag == END_TAG.encode("ascii"):
            return raw_tag, None, pos + 4
        tag = raw_tag.decode("ascii")
        cur = _Cursor(view, pos + 4, f"section {tag}")
        length = cur.varint(0xFFFFFFFF, f"length of section {tag}")
        start = cur.pos
    return raw_tag, length, start


def _next_section(view, pos: int, version: int) -> tuple[str, memoryview, int]:
    """The section at ``pos``: (tag, payload, position after it), its framing and CRC checked."""
    raw_tag, length, start = _section_frame(view, pos, version)
    tag = raw_tag.decode("ascii")
    if length is None:   # version 2's END
        return tag, view[start:start], start
    remain = len(view) - start - _CRC.size
    if length > remain:
        raise VaezError(f"truncated: section {tag} declares {length} bytes "
                        f"but only {max(remain, 0)} remain")
    payload = view[start:start + length]
    (stored_crc,) = _CRC.unpack_from(view, start + length)
    if zlib.crc32(payload, zlib.crc32(raw_tag)) != stored_crc:
        raise VaezError(f"CRC mismatch in section {tag}")
    return tag, payload, start + length + _CRC.size


def unpack(data: bytes) -> tuple[VaezHeader, dict[str, bytes]]:
    """Parse and fully validate .vaez bytes (either version); returns the header and the
    known sections.

    Unknown ancillary sections are checked (CRC) and dropped.  Raises
    VaezError for any malformed input, never another exception type.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise VaezError(f"expected bytes, got {type(data).__name__}")
    view = memoryview(data if isinstance(data, bytes) else bytes(data))
    header, pos = _parse_header(view)
    sections: dict[str, bytes] = {}
    seen: set[str] = set()
    while True:
        tag, payload, pos = _next_section(view, pos, header.version)
        if tag in seen:
            raise VaezError(f"duplicate section {tag}")
        seen.add(tag)
        if tag == END_TAG:
            if len(payload):   # version 1 only: version 2's END has no length to be wrong
                raise VaezError(f"END section must be empty, has {len(payload)} bytes")
            break
        if tag in KNOWN_SECTIONS:
            sections[tag] = bytes(payload)
        elif not _is_ancillary(tag):
            raise VaezError(f"unknown critical section {tag}")
    if pos != len(view):
        raise VaezError(f"{len(view) - pos} trailing bytes after END section")
    problem = _section_set_problem(set(sections), header.mode)
    if problem:
        raise VaezError(problem)
    return header, sections


def read_header(source: bytes | str | os.PathLike | BinaryIO) -> VaezHeader:
    """Read and validate only the header from bytes, a path or a binary file.

    A file object is read from its current position: up to `MAX_HEADER_SIZE` bytes are
    read, and a seekable one is then put back just after the header (a stream that cannot
    seek is left up to that many bytes further on, inside the first section).  OSError from opening a path propagates unchanged; malformed
    content raises VaezError.
    """
    if isinstance(source, (bytes, bytearray)):
        head = bytes(source[:MAX_HEADER_SIZE])
    elif isinstance(source, memoryview):
        head = source[:MAX_HEADER_SIZE].tobytes()
    elif isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            head = _read_up_to(f, MAX_HEADER_SIZE)
    elif hasattr(source, "read"):
        seekable = getattr(source, "seekable", None)
        start = source.tell() if callable(seekable) and seekable() else None
        head = _read_up_to(source, MAX_HEADER_SIZE)
        header, size = _parse_header(head)
        if start is not None:
            source.seek(start + size)
        return header
    else:
        raise TypeError(f"cannot read a header from {type(source).__name__}")
    return _parse_header(head)[0]


def read_section(f: BinaryIO, version: int, tags, limit: int) -> tuple[str, bytes] | None:
    """The next section of a seekable binary file positioned on one (after the header, say),
    with its CRC checked, when its tag is in ``tags``: (tag, payload). None, with the file
    back where it was, for another tag, the END tag, a malformed or cut-off section, or a
    payload longer than ``limit`` bytes (for peeking at metadata; ``unpack`` checks it all).
    Reads the tag and length first, and the payload only when it is wanted and present."""
    start = f.tell()
    head = _read_up_to(f, 4 + (4 if version == 1 else _MAX_VARINT_BYTES))
    found = None
    try:
        raw_tag, length, skip = _section_frame(head, 0, version)
    except VaezError:
        length = None
    if length is not None and length <= limit and raw_tag.decode("ascii") in tags:
        size = f.seek(0, os.SEEK_END)
        if length + _CRC.size <= size - start - skip:   # never read past the file's end
            f.seek(start + skip)
            body = _read_up_to(f, length + _CRC.size)
            payload, (crc,) = body[:length], _CRC.unpack(body[length:])
            if zlib.crc32(payload, zlib.crc32(raw_tag)) == crc:
                found = (raw_tag.decode("ascii"), payload)
    if found is None:
        f.seek(start)
    return found


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
