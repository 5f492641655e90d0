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
from functools import partial

import numpy as np

from .. import workers

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


CHUNK = 1 << 18  # symbols per step of the coders' loops: bounds their temporaries
GROUP_PIECE = 1 << 16   # symbols per piece of work in `group_by_table`


def narrow_index(table_index: np.ndarray, count: int) -> np.ndarray:
    """``table_index`` flattened, in the narrowest unsigned dtype that holds ``0..count-1``.

    Any integer dtype is accepted; an array already that narrow is used as is (no copy when
    contiguous). Raises `ValueError` when an index is outside ``0..count-1``.
    """
    index = np.asarray(table_index)
    if index.dtype.kind not in "iu":
        index = index.astype(np.int64)
    if index.size and (int(index.min()) < 0 or int(index.max()) >= count):
        raise ValueError("table index out of range")
    target = np.uint8 if count <= 1 << 8 else np.uint16 if count <= 1 << 16 else np.intp
    if index.dtype != target:
        index = index.astype(target, order="C")
    return index.ravel()


def group_by_table(index: np.ndarray, count: int):
    """Symbol positions grouped by table, each group in increasing order (the stream order).

    ``index`` comes from `narrow_index`. Returns ``(order, bounds)``: table ``t``'s symbols are
    ``order[bounds[t]:bounds[t + 1]]``. A counting sort in pieces of `GROUP_PIECE` symbols,
    which run side by side on the cores (see `workers`: every piece knows from the counts
    where its symbols of each table go); ``order`` (int32 when it fits) is the only
    full-size array it allocates.
    """
    n = len(index)
    pieces = [(a, min(a + GROUP_PIECE, n)) for a in range(0, n, GROUP_PIECE)]
    counts = np.array(workers.run([partial(np.bincount, index[a:b], minlength=count)
                                   for a, b in pieces]), dtype=np.int64).reshape(len(pieces), count)
    bounds = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(counts.sum(axis=0), out=bounds[1:])
    starts = bounds[:-1] + np.cumsum(counts, axis=0) - counts    # piece p's table t starts here
    order = np.empty(n, dtype=np.int32 if n < 1 << 31 else np.intp)

    def place(p: int) -> None:
        a, b = pieces[p]
        local = np.argsort(index[a:b], kind="stable")   # radix sort for uint8 / uint16 keys
        local += a
        done = 0
        for t in np.flatnonzero(counts[p]).tolist():
            k, f = int(counts[p, t]), int(starts[p, t])
            order[f:f + k] = local[done:done + k]
            done += k

    workers.run([partial(place, p) for p in range(len(pieces))])
    return order, bounds


def group_slices(bounds: np.ndarray):
    """``(table, start, stop, last)`` over the tables in use, each group cut into `CHUNK` pieces;
    ``last`` marks a group's final piece."""
    for t in np.flatnonzero(np.diff(bounds)).tolist():
        lo, hi = int(bounds[t]), int(bounds[t + 1])
        for a in range(lo, hi, CHUNK):
            b = min(a + CHUNK, hi)
            yield t, a, b, b == hi


class EscapeCollector:
    """Table positions for the encoder and escaped values gathered back into symbol order."""

    def __init__(self, symbols: np.ndarray):
        self.symbols = symbols
        self._where: list[np.ndarray] = []
        self._values: list[np.ndarray] = []

    def positions(self, where: np.ndarray, table: SymbolTable) -> np.ndarray:
        """Positions (int64) of ``symbols[where]`` in ``table``; escapes get ``table.size``."""
        values = self.symbols[where].astype(np.int64, copy=False)
        positions = values - table.offset
        outside = (positions < 0) | (positions >= table.size)
        if outside.any():
            self._where.append(where[outside])
            self._values.append(values[outside])
            positions[outside] = table.size
        return positions

    def escaped(self) -> np.ndarray:
        """The escaped values in symbol order."""
        if not self._where:
            return np.zeros(0, dtype=np.int64)
        where = np.concatenate(self._where)
        return np.concatenate(self._values)[np.argsort(where, kind="stable")]


class SymbolSink:
    """Decoder side: writes table positions back as symbol values, escapes filled in last."""

    def __init__(self, n: int):
        self.symbols = np.empty(n, dtype=np.int64)
        self._escapes: list[np.ndarray] = []

    def put(self, where: np.ndarray, positions: np.ndarray, table: SymbolTable) -> None:
        positions = positions.astype(np.int64)
        escape = positions == table.size
        if escape.any():
            self._escapes.append(where[escape])
        positions += table.offset
        self.symbols[where] = positions

    def escape_count(self) -> int:
        """How many escapes the positions put so far hold (their values come last)."""
        return sum(len(w) for w in self._escapes)

    def finish(self, escaped: np.ndarray) -> np.ndarray:
        where = (np.sort(np.concatenate(self._escapes)) if self._escapes
                 else np.zeros(0, dtype=np.intp))
        if len(where) != len(escaped):
            raise ValueError("escape count does not match the coded stream")
        self.symbols[where] = escaped
        return self.symbols


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


def prepare_encode(symbols: np.ndarray, table_index: np.ndarray, table_count: int):
    """What every coder's ``encode`` starts with: checked inputs, symbols grouped by table,
    and an `EscapeCollector`. Returns ``(order, bounds, collector)``."""
    symbols = np.asarray(symbols)
    if symbols.dtype.kind not in "iu":
        symbols = symbols.astype(np.int64)
    symbols = symbols.ravel()
    table_index = narrow_index(table_index, table_count)
    if len(symbols) != len(table_index):
        raise ValueError("symbols and table_index differ in length")
    order, bounds = group_by_table(table_index, table_count)
    return order, bounds, EscapeCollector(symbols)


def piece_ranges(n: int, pieces) -> list[tuple[int, int]]:
    """``(start, stop)`` of consecutive pieces of ``n`` symbols; ``pieces`` lists their
    lengths (None: one piece). A coder groups each piece by table on its own, so a decoder
    can decode piece k with only piece k's tables, which may depend on the pieces before it."""
    lengths = [n] if pieces is None else [int(k) for k in pieces]
    if any(k < 0 for k in lengths) or sum(lengths) != n:
        raise ValueError(f"piece lengths {lengths} do not add up to {n} symbols")
    stops = np.cumsum(lengths).tolist()
    return list(zip([0] + stops[:-1], stops))


class EscapeFeed:
    """Decoder side of the escape block for a stream decoded piece by piece: hands each
    piece the escaped values its positions call for, in stream order."""

    def __init__(self, escaped: np.ndarray, total: int):
        self.escaped = escaped
        self.used = 0
        self.left = total          # symbols not yet decoded

    def take(self, count: int) -> None:
        """Check that ``count`` more symbols fit in the stream."""
        if count > self.left:
            raise ValueError("more symbols asked for than the stream holds")
        self.left -= count

    def finish(self, sink: SymbolSink) -> np.ndarray:
        """Fill the sink's escapes with the next values of the block; its symbols."""
        k = sink.escape_count()
        if self.used + k > len(self.escaped):
            raise ValueError("escape count does not match the coded stream")
        part = self.escaped[self.used:self.used + k]
        self.used += k
        return sink.finish(part)

    def check_done(self) -> None:
        if self.left:
            raise ValueError(f"{self.left} symbols of the stream were never decoded")
        if self.used != len(self.escaped):
            raise ValueError("escape count does not match the coded stream")
