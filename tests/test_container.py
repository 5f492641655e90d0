"""Tests for the .vaez container: round trip, determinism and strict rejection of bad input."""

import io
import random
import struct
import time
import zlib
from dataclasses import replace

import pytest

from formats import HEADER_SIZE, MAGIC, VaezError, VaezHeader, pack, read_header, unpack

HEADER = VaezHeader(width=70, height=45, mode="RGBA", quality=37.25, coder="constriction",
                    model_id="vaez-mshp-1", model_digest=bytes(range(8)), y_shape=(192, 3, 5),
                    z_shape=(128, 1, 2), symbol_crc=0xDEADBEEF)
SECTIONS = {"YSYM": b"latent-stream", "ZSYM": b"hyper", "ALPH": b"alpha-png",
            "ICCP": b"icc", "EXIF": b"Exif\0\0MM"}


def small_file():
    return pack(HEADER, SECTIONS)


def section(tag: bytes, payload: bytes) -> bytes:
    return struct.pack("<I4s", len(payload), tag) + payload + struct.pack("<I", zlib.crc32(tag + payload))


def with_extra_section(data: bytes, tag: bytes, payload: bytes = b"xyz") -> bytes:
    end = section(b"END ", b"")
    assert data.endswith(end)
    return data[:-len(end)] + section(tag, payload) + end


def reheader(data: bytes, offset: int, fmt: str, value) -> bytes:
    """Overwrite one header field and fix the header CRC, to reach the later checks."""
    b = bytearray(data)
    struct.pack_into(fmt, b, offset, value)
    struct.pack_into("<I", b, 80, zlib.crc32(bytes(b[:80])))
    return bytes(b)


def test_round_trip():
    header, sections = unpack(small_file())
    assert header == HEADER
    assert sections == SECTIONS
    assert header.quality == 37.25


def test_round_trip_minimal_grey():
    h = replace(HEADER, mode="L", coder="huffman", quality=100, width=1, height=1)
    header, sections = unpack(pack(h, {"ZSYM": b"", "YSYM": b"\x00"}))
    assert header == h and sections == {"ZSYM": b"", "YSYM": b"\x00"}


def test_deterministic_and_canonical_order():
    a = small_file()
    b = pack(HEADER, dict(reversed(list(SECTIONS.items()))))
    assert a == b
    assert a.startswith(MAGIC) and len(MAGIC) == 8 and a[8] == 1
    tags, pos = [], HEADER_SIZE
    while pos < len(a):
        (n,) = struct.unpack_from("<I", a, pos)
        tags.append(a[pos + 4:pos + 8])
        pos += 12 + n
    assert tags == [b"ICCP", b"EXIF", b"ALPH", b"ZSYM", b"YSYM", b"END "]


def test_truncated_at_every_offset():
    data = small_file()
    for n in range(len(data)):
        with pytest.raises(VaezError):
            unpack(data[:n])
    with pytest.raises(VaezError, match="truncated"):
        unpack(data[:HEADER_SIZE - 1])
    with pytest.raises(VaezError, match="END"):
        unpack(data[:-12])


def test_every_byte_flip_is_detected():
    data = small_file()
    for i in range(len(data)):
        for mask in (0xFF, 0x01, 0x80, 0x20):
            b = bytearray(data)
            b[i] ^= mask
            with pytest.raises(VaezError):
                unpack(bytes(b))


def test_random_corruption_only_raises_vaez_error():
    rng = random.Random(1234)
    data = small_file()
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
                                  b"\x89PNG\r\n\x1a\n" + bytes(100), bytes(range(256)) * 3])
def test_garbage(blob):
    with pytest.raises(VaezError):
        unpack(blob)


def test_messages():
    data = small_file()
    with pytest.raises(VaezError, match="bad magic"):
        unpack(b"JFIF" + data[4:])
    with pytest.raises(VaezError, match="unsupported version 2"):
        unpack(data[:8] + b"\x02" + data[9:])
    with pytest.raises(VaezError, match="CRC mismatch in header"):
        unpack(data[:30] + b"?" + data[31:])
    with pytest.raises(VaezError, match="trailing bytes"):
        unpack(data + b"\0")
    flipped = bytearray(data)
    flipped[HEADER_SIZE + 8] ^= 1  # first byte of the ICCP payload
    with pytest.raises(VaezError, match="CRC mismatch in section ICCP"):
        unpack(bytes(flipped))


def test_huge_declared_length_is_refused_quickly():
    data = small_file()
    b = bytearray(data)
    struct.pack_into("<I", b, HEADER_SIZE, 0xFFFFFFFF)
    t = time.perf_counter()
    with pytest.raises(VaezError, match="truncated"):
        unpack(bytes(b))
    assert time.perf_counter() - t < 0.5


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
def test_header_field_limits(fields, message):
    data = small_file()
    for offset, fmt, value in fields:
        data = reheader(data, offset, fmt, value)
    with pytest.raises(VaezError, match=message):
        unpack(data)
    with pytest.raises(VaezError, match=message):
        read_header(data)


def test_unknown_ancillary_skipped_unknown_critical_refused():
    data = small_file()
    header, sections = unpack(with_extra_section(data, b"teXt", b"hello"))
    assert header == HEADER and sections == SECTIONS
    with pytest.raises(VaezError, match="unknown critical section NEWS"):
        unpack(with_extra_section(data, b"NEWS"))
    with pytest.raises(VaezError, match="invalid section tag"):
        unpack(with_extra_section(data, b"a\0bc"))
    # pack writes ancillary sections after the known ones and unpack skips them
    packed = pack(HEADER, {**SECTIONS, "zzzz": b"1", "aaaa": b"2"})
    assert unpack(packed) == (HEADER, SECTIONS)
    assert packed.index(b"aaaa") < packed.index(b"zzzz") < packed.index(b"END ")


def test_section_set_rules():
    data = small_file()
    with pytest.raises(VaezError, match="duplicate section ZSYM"):
        unpack(with_extra_section(data, b"ZSYM"))
    with pytest.raises(VaezError, match="duplicate section teXt"):
        unpack(with_extra_section(with_extra_section(data, b"teXt"), b"teXt"))
    rgb = replace(HEADER, mode="RGB")
    no_alpha = pack(rgb, {"ZSYM": b"z", "YSYM": b"y"})
    with pytest.raises(VaezError, match="unexpected ALPH"):
        unpack(with_extra_section(no_alpha, b"ALPH"))
    only_z = no_alpha[:HEADER_SIZE] + section(b"ZSYM", b"z") + section(b"END ", b"")
    with pytest.raises(VaezError, match="missing required section YSYM"):
        unpack(only_z)
    no_alph = reheader(no_alpha, 9, "<B", 3)  # header says RGBA
    with pytest.raises(VaezError, match="missing required section ALPH"):
        unpack(no_alph)
    with pytest.raises(VaezError, match="END section must be empty"):
        unpack(no_alpha[:-12] + section(b"END ", b"x"))


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
        replace(HEADER, width=3.0),
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


def test_read_header_sources(tmp_path):
    data = small_file()
    path = tmp_path / "a.vaez"
    path.write_bytes(data)
    assert read_header(data) == HEADER
    assert read_header(bytearray(data)) == HEADER
    assert read_header(memoryview(data)) == HEADER
    assert read_header(path) == HEADER
    assert read_header(str(path)) == HEADER
    f = io.BytesIO(data)
    assert read_header(f) == HEADER
    assert f.tell() == HEADER_SIZE  # header only
    with open(path, "rb") as fh:
        assert read_header(fh) == HEADER
    assert read_header(data[:HEADER_SIZE]) == HEADER  # sections are not needed
    with pytest.raises(VaezError, match="truncated"):
        read_header(io.BytesIO(data[:50]))
    with pytest.raises(VaezError, match="bad magic"):
        read_header(b"not a vaez file at all")
