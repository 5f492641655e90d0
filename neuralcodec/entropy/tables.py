"""Integer frequency tables: the shared language between the entropy model and the coders.

Every coder (constriction, Huffman) sees the same thing: a list of `SymbolTable`s and, for each
symbol, the index of the table that models it. A table holds integer frequencies that sum to
``2**PRECISION`` over a contiguous range of symbol values plus one *escape* entry for anything
outside that range. Tables are computed once when weights are exported and stored with the
weights as integers, so encoder and decoder use bit-identical probabilities on every machine
(floating-point CDFs computed at run time would differ in the last ulp between libms).
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

PRECISION = 16
TOTAL = 1 << PRECISION


@dataclass(frozen=True)
class SymbolTable:
    """Frequencies of symbols ``offset .. offset+len(freqs)-2``; ``freqs[-1]`` is the escape."""

    offset: int
    freqs: np.ndarray  # int64, every entry >= 1, sum == TOTAL

    @property
    def size(self) -> int:
        """Number of directly coded symbols (the escape entry excluded)."""
        return len(self.freqs) - 1


def quantize_pmf(pmf: np.ndarray, tail: float) -> np.ndarray:
    """Turn a float pmf over the direct symbols plus the tail mass into integer frequencies.

    Every entry gets at least 1 so every symbol stays codable; the rounding error is absorbed
    by the largest entry. Only called at export time; results are stored as integers.
    """
    probs = np.append(np.asarray(pmf, dtype=np.float64), max(float(tail), 0.0))
    probs = np.maximum(probs, 0.0)
    probs /= probs.sum()
    freqs = np.maximum(np.round(probs * (TOTAL - len(probs))).astype(np.int64), 0) + 1
    freqs[np.argmax(freqs)] += TOTAL - int(freqs.sum())
    assert freqs.min() >= 1 and int(freqs.sum()) == TOTAL
    return freqs


def gaussian_table(scale: float, tail_sigmas: float = 6.0) -> SymbolTable:
    """Zero-mean Gaussian of std ``scale`` discretized to integer bins ``[q-1/2, q+1/2)``."""
    half = max(1, int(math.ceil(scale * tail_sigmas)))
    values = np.arange(-half, half + 1)
    cdf = np.array([0.5 * math.erfc(-(v / scale) / math.sqrt(2.0))
                    for v in np.append(values - 0.5, half + 0.5)])
    pmf = np.diff(cdf)
    tail = 1.0 - float(pmf.sum())
    return SymbolTable(offset=-half, freqs=quantize_pmf(pmf, tail))


def scale_table(count: int = 64, low: float = 0.11, high: float = 256.0) -> np.ndarray:
    """The fixed log-spaced list of Gaussian scales; a latent's scale index selects one."""
    return np.exp(np.linspace(math.log(low), math.log(high), count))


def split_escapes(symbols: np.ndarray, table_index: np.ndarray, tables: list[SymbolTable]):
    """Map symbol values to table positions ``0..size`` (``size`` = escape).

    Returns ``(positions, escaped_values)``; the escaped values keep the order of the symbols.
    """
    symbols = np.asarray(symbols, dtype=np.int64).ravel()
    table_index = np.asarray(table_index, dtype=np.int64).ravel()
    offsets = np.array([t.offset for t in tables], dtype=np.int64)[table_index]
    sizes = np.array([t.size for t in tables], dtype=np.int64)[table_index]
    positions = symbols - offsets
    outside = (positions < 0) | (positions >= sizes)
    positions = np.where(outside, sizes, positions)
    return positions, symbols[outside]


def join_escapes(positions: np.ndarray, escaped: np.ndarray, table_index: np.ndarray,
                 tables: list[SymbolTable]) -> np.ndarray:
    """Inverse of `split_escapes`: positions plus escaped values back to symbol values."""
    table_index = np.asarray(table_index, dtype=np.int64).ravel()
    offsets = np.array([t.offset for t in tables], dtype=np.int64)[table_index]
    sizes = np.array([t.size for t in tables], dtype=np.int64)[table_index]
    symbols = positions.astype(np.int64) + offsets
    outside = positions == sizes
    if int(outside.sum()) != len(escaped):
        raise ValueError("escape count does not match the coded stream")
    symbols[outside] = escaped
    return symbols


def pack_escapes(values: np.ndarray) -> bytes:
    """Escaped values as a count followed by zig-zag LEB128 varints."""
    out = bytearray(struct.pack("<I", len(values)))
    for v in np.asarray(values, dtype=np.int64).tolist():
        u = (v << 1) if v >= 0 else ((-v << 1) - 1)
        while True:
            byte = u & 0x7F
            u >>= 7
            out.append(byte | (0x80 if u else 0))
            if not u:
                break
    return bytes(out)


def unpack_escapes(data: bytes, pos: int = 0, limit: int | None = None):
    """Read what `pack_escapes` wrote at ``data[pos:]``; returns ``(values, new_pos)``."""
    if len(data) - pos < 4:
        raise ValueError("escape block truncated")
    (count,) = struct.unpack_from("<I", data, pos)
    pos += 4
    if limit is not None and count > limit:
        raise ValueError("escape count exceeds the number of symbols")
    values = []
    for _ in range(count):
        u, shift = 0, 0
        while True:
            if pos >= len(data):
                raise ValueError("escape block truncated")
            if shift >= 63:
                raise ValueError("escape value too long")
            byte = data[pos]
            pos += 1
            u |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        values.append((u >> 1) if not u & 1 else -((u + 1) >> 1))
    return np.array(values, dtype=np.int64), pos
