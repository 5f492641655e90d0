"""Tests for the .vaez container: round trip, determinism and strict rejection of bad input."""

import io
import random
import struct
import tempfile
import time
import tracemalloc
import zlib
from dataclasses import replace

import pytest

import formats
from formats import (HEADER_SIZE, MAGIC, VERSION, VaezError, VaezHeader, header_size, pack,
                     read_header, unpack)
from formats.vaez import SECTION_ORDER

HEADER = VaezHeader(width=70, height=45, mode="RGBA", quality=37.25, coder="constriction",
                    model_id="vaez-mshp-1", model_digest=bytes(range(8)), y_shape=(192, 3, 5),
                    z_shape=(128, 1, 2), symbol_crc=0xDEADBEEF)
HEADER_V1 = replace(HEADER, version=1)
SECTIONS = {"YSYM": b"latent-stream", "ZSYM": b"hyper", "ALPH": b"alpha-png",
            "ICCP": b"icc", "EXIF": b"Exif\0\0MM"}
both_versions = pytest.mark.parametrize("version", [1, 2])


def small_file(version: int = VERSION):
    return pack(replace(HEADER, version=version), SECTIONS)


def varint(value: int) -> bytes:
    """Unsigned LEB128, written here from VAEZ.md independently of formats/vaez.py."""
    out = b""
    while value >= 0x80:
        out += bytes([value & 0x7F | 0x80])
        value >>= 7
    return out + bytes([value])


def section(tag: bytes, payload: bytes, version: int = VERSION) -> bytes:
    crc = struct.pack("<I", zlib.crc32(tag + payload))
    if version == 1:
        return struct.pack("<I4s", len(payload), tag) + payload + crc
    return tag if tag == b"END " else tag + varint(len(payload)) + payload + crc


def end_section(version: int) -> bytes:
    return section(b"END ", b"", version)


def with_extra_section(data: bytes, tag: bytes, payload: bytes = b"xyz") -> bytes:
    version = data[8]
    end = end_section(version)
    assert data.endswith(end)
    return data[:-len(end)] + section(tag, payload, version) + end


def reheader(data: bytes, offset: int, fmt: str, value) -> bytes:
    """Overwrite one version-1 header field and fix the header CRC, to reach the later checks."""
    b = bytearray(data)
    struct.pack_into(fmt, b, offset, value)
    struct.pack_into("<I", b, 80, zlib.crc32(bytes(b[:80])))
    return bytes(b)


def v2_header(width=70, height=45, flags=3, centi=3725, model_id=b"vaez-mshp-1",
              shapes=(192, 3, 5, 128, 1, 2), raw_width=None) -> bytes:
    """A version-2 header built field by field from VAEZ.md (any values, valid or not)."""
    fields = (MAGIC + bytes([2, flags]) + (raw_width if raw_width is not None else varint(width))
              + varint(height) + struct.pack("<HB", centi, len(model_id)) + model_id
              + bytes(range(8)) + b"".join(map(varint, shapes)) + struct.pack("<I", 0xDEADBEEF))
    return fields + struct.pack("<I", zlib.crc32(fields))


def v2_file(header: bytes) -> bytes:
    return header + b"".join(section(t.encode(), SECTIONS[t]) for t in SECTION_ORDER
                             if t in SECTIONS) + b"END "


@both_versions
def test_round_trip(version):
    header, sections = unpack(small_file(version))
    assert header == replace(HEADER, version=version)
    assert sections == SECTIONS
    assert header.quality == 37.25


@both_versions
def test_round_trip_minimal_grey(version):
    h = replace(HEADER, mode="L", coder="huffman", quality=100, width=1, height=1, version=version)
    header, sections = unpack(pack(h, {"ZSYM": b"", "YSYM": b"\x00"}))
    assert header == h and sections == {"ZSYM": b"", "YSYM": b"\x00"}


def test_version_2_is_written_and_smaller():
    assert VERSION == 2 and HEADER.version == 2
    v1, v2 = small_file(1), small_file(2)
    assert v2[8] == 2 and v1[8] == 1
    # the same fields and payloads: 84 -> 50 header bytes, 12 -> 9 per section, 12 -> 4 for END
    assert header_size(HEADER_V1) == HEADER_SIZE == 84 and header_size(HEADER) == 50
    assert len(v1) - len(v2) == 34 + 5 * 3 + 8
    assert v2 == v2_file(v2_header())  # the layout VAEZ.md describes, field by field
    biggest = replace(HEADER, width=16384, height=16384, model_id="m" * 32,   # 2**28 pixels
                      y_shape=(4096, 65535, 65535), z_shape=(4096, 65535, 65535))
    assert header_size(biggest) == 83 < formats.MAX_HEADER_SIZE == 84  # version 1's 84 is the most
    assert unpack(pack(biggest, {"ZSYM": b"", "YSYM": b"", "ALPH": b""}))[0] == biggest


def section_tags(data: bytes) -> list[bytes]:
    """Walk the sections by the spec's framing."""
    tags, pos = [], header_size(read_header(data))
    while pos < len(data):
        if data[8] == 1:  # length, then tag
            (n,) = struct.unpack_from("<I", data, pos)
            tags.append(data[pos + 4:pos + 8])
            pos += 12 + n
            continue
        tags.append(data[pos:pos + 4])
        if data[pos:pos + 4] == b"END ":
            pos += 4
        else:
            n, shift, pos = 0, 0, pos + 4
            while True:
                n |= (data[pos] & 0x7F) << shift
                shift, pos = shift + 7, pos + 1
                if data[pos - 1] < 0x80:
                    break
            pos += n + 4
    assert pos == len(data)
    return tags


@both_versions
def test_deterministic_and_canonical_order(version):
    a = small_file(version)
    b = pack(replace(HEADER, version=version), dict(reversed(list(SECTIONS.items()))))
    assert a == b
    assert a.startswith(MAGIC) and len(MAGIC) == 8 and a[8] == version
    assert section_tags(a) == [b"ICCP", b"EXIF", b"ALPH", b"ZSYM", b"YSYM", b"END "]


@both_versions
def test_truncated_at_every_offset(version):
    data = small_file(version)
    for n in range(len(data)):
        with pytest.raises(VaezError):
            unpack(data[:n])
    with pytest.raises(VaezError, match="truncated"):
        unpack(data[:header_size(read_header(data)) - 1])
    with pytest.raises(VaezError, match="END"):
        unpack(data[:-len(end_section(version))])


@both_versions
def test_every_byte_flip_is_detected(version):
    data = small_file(version)
    for i in range(len(data)):
        for mask in (0xFF, 0x01, 0x80, 0x20):
            b = bytearray(data)
            b[i] ^= mask
            with pytest.raises(VaezError):
                unpack(bytes(b))


@both_versions
def test_random_corruption_only_raises_vaez_error(version):
    rng = random.Random(1234)
    data = small_file(version)
    for _ in range(1500):
        b = bytearray(data)
        op = rng.randrange(3)
        i = rng.randrange(len(b))
        if op == 0:
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 1:
            del b[i:i + rng.randint(1, 8)]
        else:
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        if bytes(b) != data:
            with pytest.raises(VaezError):
                unpack(bytes(b))


@pytest.mark.parametrize("blob", [b"", b"\x89", b"garbage", MAGIC, MAGIC + bytes(200),
                                  MAGIC + b"\x02", MAGIC + b"\x02" + b"\xff" * 100,
                                  b"\x89PNG\r\n\x1a\n" + bytes(100), bytes(range(256)) * 3])
def test_garbage(blob):
    with pytest.raises(VaezError):
        unpack(blob)


@both_versions
def test_messages(version):
    data = small_file(version)
    with pytest.raises(VaezError, match="bad magic"):
        unpack(b"JFIF" + data[4:])
    with pytest.raises(VaezError, match="unsupported version 3"):
        unpack(data[:8] + b"\x03" + data[9:])
    with pytest.raises(VaezError, match="CRC mismatch in header"):
        unpack(data[:30] + b"?" + data[31:])
    with pytest.raises(VaezError, match="trailing bytes"):
        unpack(data + b"\0")
    flipped = bytearray(data)
    first_payload = header_size(read_header(data)) + (8 if version == 1 else 5)  # ICCP's
    assert data[first_payload:first_payload + 3] == b"icc"
    flipped[first_payload] ^= 1
    with pytest.raises(VaezError, match="CRC mismatch in section ICCP"):
        unpack(bytes(flipped))


@both_versions
def test_huge_declared_length_is_refused_quickly(version):
    data = small_file(version)
    start = header_size(read_header(data))
    if version == 1:
        data = data[:start] + struct.pack("<I", 0xFFFFFFFF) + data[start + 4:]
    else:  # ICCP's one-byte length becomes 2^32 - 1
        data = data[:start + 4] + varint(0xFFFFFFFF) + data[start + 5:]
    t = time.perf_counter()
    tracemalloc.start()
    with pytest.raises(VaezError, match="truncated"):
        unpack(data)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert time.perf_counter() - t < 0.5 and peak < 100_000   # nothing sized by the claim


@pytest.mark.parametrize("fields,message", [
    ([(12, "<I", 0xFFFFFFFF)], "dimensions"),
    ([(12, "<I", 0)], "dimensions"),
    ([(16, "<I", 65536)], "dimensions"),
    ([(12, "<I", 65535), (16, "<I", 65535)], "exceed the limit"),
    ([(20, "<H", 99)], "quality"),
    ([(20, "<H", 10001)], "quality"),
    ([(9, "<B", 4)], "unknown mode"),
    ([(10, "<B", 2)], "unknown coder"),
    ([(11, "<B", 1)], "padding"),
    ([(64, "<H", 4097)], "y_shape"),
    ([(74, "<H", 0)], "z_shape"),
    ([(24, "<B", 0)], "model_id"),
    ([(30, "<B", 0x07)], "model_id"),
])
def test_header_field_limits_version_1(fields, message):
    data = small_file(1)
    for offset, fmt, value in fields:
        data = reheader(data, offset, fmt, value)
    with pytest.raises(VaezError, match=message):
        unpack(data)
    with pytest.raises(VaezError, match=message):
        read_header(data)


@pytest.mark.parametrize("fields,message", [
    (dict(width=65536), "width 65536 exceeds 65535"),
    (dict(width=0), "dimensions"),
    (dict(height=70000), "height 70000 exceeds"),
    (dict(width=65535, height=65535), "exceed the limit"),
    (dict(raw_width=b"\x80\x80\x80\x80\x80\x01"), "longer than 5 bytes"),
    (dict(raw_width=b"\xc6\x00"), "not minimally encoded"),
    (dict(centi=99), "quality"),
    (dict(centi=10001), "quality"),
    (dict(flags=3 | 1 << 3), "reserved header bits"),
    (dict(flags=1 << 2 | 1 << 7), "reserved header bits"),
    (dict(model_id=b""), "model_id"),
    (dict(model_id=b"x" * 33), "model_id length 33"),
    (dict(model_id=b"ab\x07"), "model_id"),
    (dict(shapes=(4097, 3, 5, 128, 1, 2)), "y_shape channels 4097"),
    (dict(shapes=(192, 3, 5, 128, 0, 2)), "z_shape"),
    (dict(shapes=(192, 3, 65536, 128, 1, 2)), "y_shape width"),
    (dict(model_id=b"ab\x80"), "model_id"),
])
def test_header_field_limits_version_2(fields, message):
    data = v2_file(v2_header(**fields))
    with pytest.raises(VaezError, match=message):
        unpack(data)
    with pytest.raises(VaezError, match=message):
        read_header(data)


@both_versions
def test_unknown_ancillary_skipped_unknown_critical_refused(version):
    data = small_file(version)
    header = replace(HEADER, version=version)
    assert unpack(with_extra_section(data, b"teXt", b"hello")) == (header, SECTIONS)
    assert unpack(with_extra_section(data, b"teXt", bytes(300))) == (header, SECTIONS)
    with pytest.raises(VaezError, match="unknown critical section NEWS"):
        unpack(with_extra_section(data, b"NEWS"))
    with pytest.raises(VaezError, match="invalid section tag"):
        unpack(with_extra_section(data, b"a\0bc"))
    # pack writes ancillary sections after the known ones and unpack skips them
    packed = pack(header, {**SECTIONS, "zzzz": b"1", "aaaa": b"2"})
    assert unpack(packed) == (header, SECTIONS)
    assert packed.index(b"aaaa") < packed.index(b"zzzz") < packed.index(b"END ")


@both_versions
def test_section_set_rules(version):
    data = small_file(version)
    with pytest.raises(VaezError, match="duplicate section ZSYM"):
        unpack(with_extra_section(data, b"ZSYM"))
    with pytest.raises(VaezError, match="duplicate section teXt"):
        unpack(with_extra_section(with_extra_section(data, b"teXt"), b"teXt"))
    rgb = replace(HEADER, mode="RGB", version=version)
    no_alpha = pack(rgb, {"ZSYM": b"z", "YSYM": b"y"})
    with pytest.raises(VaezError, match="unexpected ALPH"):
        unpack(with_extra_section(no_alpha, b"ALPH"))
    head = no_alpha[:header_size(rgb)]
    only_z = head + section(b"ZSYM", b"z", version) + end_section(version)
    with pytest.raises(VaezError, match="missing required section YSYM"):
        unpack(only_z)
    rgba = replace(rgb, mode="RGBA")
    no_alph = pack(rgba, {"ZSYM": b"z", "YSYM": b"y", "ALPH": b"a"}).replace(
        section(b"ALPH", b"a", version), b"")
    with pytest.raises(VaezError, match="missing required section ALPH"):
        unpack(no_alph)
    if version == 1:
        with pytest.raises(VaezError, match="END section must be empty"):
            unpack(no_alpha[:-12] + section(b"END ", b"x", 1))
    else:  # the END tag has no length: anything after it is trailing
        with pytest.raises(VaezError, match="trailing bytes"):
            unpack(no_alpha + b"\x01x")


def test_pack_validates():
    good = dict(ZSYM=b"z", YSYM=b"y", ALPH=b"a")
    bad_headers = [
        replace(HEADER, width=0), replace(HEADER, height=70000),
        replace(HEADER, width=65535, height=65535), replace(HEADER, mode="P"),
        replace(HEADER, coder="arith"), replace(HEADER, quality=0.5),
        replace(HEADER, quality=101), replace(HEADER, quality=float("nan")),
        replace(HEADER, quality=37.333), replace(HEADER, model_id=""),
        replace(HEADER, model_id="x" * 33), replace(HEADER, model_id="naïve"),
        replace(HEADER, model_digest=b"short"), replace(HEADER, y_shape=(1, 2)),
        replace(HEADER, z_shape=(5000, 1, 1)), replace(HEADER, symbol_crc=-1),
        replace(HEADER, width=3.0), replace(HEADER, version=3), replace(HEADER, version=0),
    ]
    for h in bad_headers:
        with pytest.raises(ValueError):
            pack(h, good)
    for sections in [{"ZSYM": b"z"}, {"ZSYM": b"z", "YSYM": b"y"},
                     {**good, "NEWS": b""}, {**good, "END ": b""}, {**good, "ab": b""},
                     {**good, "ZSYM": "text"}]:
        with pytest.raises(ValueError):
            pack(HEADER, sections)
    assert unpack(pack(replace(HEADER, quality=round(37.333, 2)), good))[0].quality == 37.33


@both_versions
def test_read_header_sources(tmp_path, version):
    data = small_file(version)
    header = replace(HEADER, version=version)
    path = tmp_path / "a.vaez"
    path.write_bytes(data)
    assert read_header(data) == header
    assert read_header(bytearray(data)) == header
    assert read_header(memoryview(data)) == header
    assert read_header(path) == header
    assert read_header(str(path)) == header
    f = io.BytesIO(data)
    assert read_header(f) == header
    assert f.tell() == header_size(header)  # left just after the header
    assert formats.read_section(f, version, ("ICCP",), 100) == ("ICCP", b"icc")
    assert formats.read_section(f, version, ("EXIF", "ALPH"), 100) == ("EXIF", SECTIONS["EXIF"])
    assert formats.read_section(f, version, ("ALPH",), 3) is None  # its 9 bytes: over the limit
    with open(path, "rb") as fh:
        assert read_header(fh) == header

    class Pipe:   # read() only: no tell, seek or seekable
        def __init__(self, data):
            self.rest = data

        def read(self, n):
            chunk, self.rest = self.rest[:n], self.rest[n:]
            return chunk

    assert read_header(Pipe(data)) == header
    assert read_header(data[:header_size(header)]) == header  # sections are not needed
    with pytest.raises(VaezError, match="truncated"):
        read_header(io.BytesIO(data[:40]))
    with pytest.raises(VaezError, match="bad magic"):
        read_header(b"not a vaez file at all")


def test_version_2_framing_edge_cases():
    data = small_file(2)
    start = header_size(read_header(data))          # the ICCP section: tag, length 3, "icc", CRC
    assert data[start:start + 5] == b"ICCP\x03"
    cases = {
        "exceeds": data[:start + 4] + b"\x80\x80\x80\x80\x10" + data[start + 5:],  # 2**32
        "longer than 5 bytes": data[:start + 4] + b"\x83\x80\x80\x80\x80\x00" + data[start + 5:],
        "truncated": data[:start + 4] + b"\x80",                  # a continuation byte, then EOF
        "trailing bytes": data + struct.pack("<II", 0, zlib.crc32(b"END ")),   # version 1's END
    }
    for message, bad in cases.items():
        with pytest.raises(VaezError, match=message):
            unpack(bad)
    with pytest.raises(VaezError, match="trailing bytes"):
        unpack(data + section(b"ZSYM", b"z"))                     # a section after END


@both_versions
def test_read_section_returns_none_and_rewinds_on_anything_unexpected(version):
    """The Pillow plugin peeks at metadata with read_section: it never raises, reads a payload
    only for a wanted tag, and leaves the file where it was when it returns None."""
    data = small_file(version)
    start = header_size(read_header(data))
    wanted = ("ICCP", "EXIF")

    def peek(blob, tags=wanted, limit=100):
        f = io.BytesIO(blob)
        f.seek(start)
        got = formats.read_section(f, version, tags, limit)
        return got, f.tell()

    got, pos = peek(data)
    assert got == ("ICCP", b"icc") and pos == start + len(section(b"ICCP", b"icc", version))
    assert peek(data, tags=("EXIF",)) == (None, start)           # not wanted: nothing read
    assert peek(data, limit=2) == (None, start)                   # over the limit
    assert peek(data[:start] + end_section(version)) == (None, start)
    # a claimed 60 MiB ICCP in a small file on disk: refused without reading (or allocating) it
    claim = (struct.pack("<I", 60 << 20) + b"ICCP" if version == 1 else b"ICCP" + varint(60 << 20))
    with tempfile.TemporaryFile() as f:
        f.write(data[:start] + claim + bytes(100))
        f.seek(start)
        tracemalloc.start()
        assert formats.read_section(f, version, wanted, 64 << 20) is None and f.tell() == start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 100_000
    rng = random.Random(99)
    for _ in range(600):
        b = bytearray(data)
        i = rng.randrange(start, len(b))
        if rng.random() < 0.5:
            b[i] = rng.randrange(256)
        else:
            del b[i:]
        got, pos = peek(bytes(b))
        if got is None:
            assert pos == start
        else:   # only a section that is intact up to its CRC comes back
            assert got == ("ICCP", b"icc") and bytes(b[start:pos]) == section(b"ICCP", b"icc", version)
