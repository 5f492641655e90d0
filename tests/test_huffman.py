"""Tests for the numpy Huffman backend: exact round trips, agreement with the constriction
backend, size close to range coding, deterministic output and clean failure on bad input."""
from __future__ import annotations

import heapq
import time

import numpy as np
from latentgen import mixture_index
import pytest

from neuralcodec.entropy import constriction_coder, huffman
from neuralcodec.entropy.tables import (TOTAL, SymbolTable, gaussian_table, quantize_pmf,
                                        scale_table)

GAUSSIANS = [gaussian_table(s) for s in scale_table()]
SCALES = scale_table()


def _random_table(rng: np.random.Generator, size: int | None = None) -> SymbolTable:
    size = int(rng.integers(0, 30)) if size is None else size
    if size == 0:
        return SymbolTable(offset=0, freqs=np.array([TOTAL], dtype=np.int64))
    pmf = rng.dirichlet(np.full(size, float(rng.choice([0.05, 0.5, 3.0]))))
    return SymbolTable(offset=int(rng.integers(-20, 5)),
                       freqs=quantize_pmf(pmf, float(rng.uniform(0, 0.05))))


def _sample(tables, index, rng):
    """Draw each symbol from its table; escapes become values far outside the range."""
    symbols = np.empty(len(index), dtype=np.int64)
    for t in np.unique(index):
        sel = np.flatnonzero(index == t)
        table = tables[t]
        pos = rng.choice(len(table.freqs), size=len(sel), p=table.freqs / TOTAL)
        vals = pos + table.offset
        esc = pos == table.size
        k = int(esc.sum())
        vals[esc] = np.where(rng.random(k) < 0.5, table.offset - 1 - rng.integers(0, 10**6, k),
                             table.offset + table.size + rng.integers(0, 10**6, k))
        symbols[sel] = vals
    return symbols


def _mixture(n, parts, rng):
    """Rounded Gaussian latents; ``parts`` = [(share, lowest scale, highest scale)]."""
    index = mixture_index(n, parts, rng, SCALES)
    symbols = np.round(rng.standard_normal(n) * SCALES[index]).astype(np.int64)
    return symbols, index


TYPICAL = [(0.6, 0.11, 0.3), (0.3, 0.3, 2.0), (0.1, 2.0, 20.0)]
LOW_RATE = [(0.9, 0.11, 0.16), (0.07, 0.16, 1.0), (0.03, 1.0, 8.0)]


def _roundtrip(symbols, index, tables):
    data = huffman.encode(symbols, index, tables)
    out = huffman.decode(data, index, tables)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, np.asarray(symbols, dtype=np.int64).ravel())
    return data


def test_interface():
    assert huffman.NAME == "huffman"
    assert huffman.available() is True


def test_random_tables_roundtrip():
    rng = np.random.default_rng(0)
    for trial in range(20):
        tables = [_random_table(rng) for _ in range(int(rng.integers(1, 12)))]
        n = int(rng.integers(1, 3000))
        index = rng.integers(0, len(tables), n)
        _roundtrip(_sample(tables, index, rng), index, tables)


def test_all_gaussian_scales_roundtrip():
    rng = np.random.default_rng(1)
    index = np.repeat(np.arange(64), 700)
    rng.shuffle(index)
    symbols = np.round(rng.standard_normal(len(index)) * SCALES[index]).astype(np.int64)
    _roundtrip(symbols, index, GAUSSIANS)
    # each table alone too, including the all-mode case
    for t in range(64):
        _roundtrip(symbols[index == t], np.full(int((index == t).sum()), t), GAUSSIANS)
        _roundtrip(np.zeros(50, dtype=np.int64), np.full(50, t), GAUSSIANS)


def test_escapes_empty_single():
    rng = np.random.default_rng(2)
    symbols, index = _mixture(5000, TYPICAL, rng)
    symbols[::37] = rng.choice([-1, 1], len(symbols[::37])) * 10**6
    symbols[5] = -(2**40)
    _roundtrip(symbols, index, GAUSSIANS)
    data = _roundtrip(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), GAUSSIANS)
    assert huffman.decode(data, [], GAUSSIANS).shape == (0,)
    for value in (0, 1, -3, 10**6, -(10**6)):
        for t in (0, 20, 63):
            _roundtrip([value], [t], GAUSSIANS)
    # one table used by a single symbol among many others
    index = np.full(4000, 10)
    index[1234] = 40
    symbols = np.round(rng.standard_normal(4000) * SCALES[index]).astype(np.int64)
    _roundtrip(symbols, index, GAUSSIANS)


def test_odd_tables():
    rng = np.random.default_rng(3)
    only_escape = SymbolTable(offset=0, freqs=np.array([TOTAL], dtype=np.int64))
    escape_mode = SymbolTable(offset=0, freqs=np.array([100, 200, TOTAL - 300], dtype=np.int64))
    nearly_sure = SymbolTable(offset=-1, freqs=np.array([1, TOTAL - 2, 1], dtype=np.int64))
    skewed = SymbolTable(offset=3, freqs=quantize_pmf(np.array([0.01, 0.02, 0.9, 0.07]), 1e-3))
    tables = [only_escape, escape_mode, nearly_sure, skewed]
    index = rng.integers(0, 4, 20000)
    _roundtrip(_sample(tables, index, rng), index, tables)
    with pytest.raises(ValueError):
        huffman.encode([0], [0], [SymbolTable(offset=0, freqs=np.array([5, 6]))])
    with pytest.raises(ValueError):
        huffman.encode([0], [4], tables)


def test_matches_constriction():
    rng = np.random.default_rng(4)
    symbols, index = _mixture(30000, TYPICAL, rng)
    symbols[::101] *= 1000
    c_out = constriction_coder.decode(constriction_coder.encode(symbols, index, GAUSSIANS),
                                      index, GAUSSIANS)
    h_out = huffman.decode(huffman.encode(symbols, index, GAUSSIANS), index, GAUSSIANS)
    np.testing.assert_array_equal(h_out, c_out)
    tables = [_random_table(rng) for _ in range(8)]
    index = rng.integers(0, 8, 5000)
    symbols = _sample(tables, index, rng)
    c_out = constriction_coder.decode(constriction_coder.encode(symbols, index, tables),
                                      index, tables)
    np.testing.assert_array_equal(huffman.decode(huffman.encode(symbols, index, tables),
                                                 index, tables), c_out)


@pytest.mark.parametrize("parts", [TYPICAL, LOW_RATE], ids=["typical", "low-rate"])
def test_size_close_to_constriction(parts):
    rng = np.random.default_rng(5)
    symbols, index = _mixture(400_000, parts, rng)
    h = len(_roundtrip(symbols, index, GAUSSIANS))
    c = len(constriction_coder.encode(symbols, index, GAUSSIANS))
    assert h / c < 1.05, (h, c)


def test_size_close_to_constriction_skewed_tables():
    rng = np.random.default_rng(6)
    tables = []
    for _ in range(128):
        x = np.arange(-20, 21, dtype=np.float64)
        centre, left, right = rng.normal(0, 1.5), *rng.uniform(0.1, 4.0, size=2)
        pmf = np.exp(-np.where(x < centre, (centre - x) / left, (x - centre) / right))
        tables.append(SymbolTable(offset=-20, freqs=quantize_pmf(pmf / pmf.sum(), 1e-4)))
    index = np.repeat(np.arange(128), 200)
    symbols = _sample(tables, index, rng)
    h = len(_roundtrip(symbols, index, tables))
    c = len(constriction_coder.encode(symbols, index, tables))
    assert h / c < 1.05, (h, c)


def test_deterministic():
    rng = np.random.default_rng(7)
    symbols, index = _mixture(20000, TYPICAL, rng)
    first = huffman.encode(symbols, index, GAUSSIANS)
    assert huffman.encode(symbols, index, GAUSSIANS) == first
    # codes rebuilt from scratch from equal-content table copies give the same bytes
    huffman._CODES.clear()
    copies = [SymbolTable(t.offset, t.freqs.copy()) for t in GAUSSIANS]
    assert huffman.encode(symbols, index, copies) == first
    np.testing.assert_array_equal(huffman.decode(first, index, copies), symbols)


def _huffman_cost(weights):
    heap = [(int(w), i) for i, w in enumerate(weights)]
    heapq.heapify(heap)
    cost, uid = 0, len(heap)
    while len(heap) > 1:
        a, _ = heapq.heappop(heap)
        b, _ = heapq.heappop(heap)
        cost += a + b
        heapq.heappush(heap, (a + b, uid))
        uid += 1
    return cost


def test_length_limited_codes():
    rng = np.random.default_rng(8)
    for _ in range(30):
        n = int(rng.integers(2, 300))
        weights = rng.integers(1, 10**6, n).astype(np.int64)
        lengths = huffman._limited_lengths(weights, 24)
        assert int((weights * lengths).sum()) == _huffman_cost(weights)  # optimal
        assert sum(2.0 ** -lengths) == 1.0
    # geometric weights would need ~40-bit codes; the limit holds and the code stays complete
    weights = (2 ** np.arange(40, dtype=np.int64))
    lengths = huffman._limited_lengths(weights, 24)
    assert lengths.max() == 24 and sum(2.0 ** -lengths) == 1.0
    for table in GAUSSIANS:
        assert 1 <= huffman._table_code(table).max_len <= huffman.MAX_BITS


def test_bad_streams_raise_value_error():
    rng = np.random.default_rng(9)
    symbols, index = _mixture(20000, TYPICAL, rng)
    symbols[::500] = 10**6
    data = huffman.encode(symbols, index, GAUSSIANS)
    for cut in sorted(set(rng.integers(0, len(data), 60).tolist()) | {0, 3, len(data) - 1}):
        with pytest.raises(ValueError):
            huffman.decode(data[:cut], index, GAUSSIANS)
    for extra in (b"\x00", b"\xff", b"\x01\x02\x03"):
        with pytest.raises(ValueError):
            huffman.decode(data + extra, index, GAUSSIANS)
    with pytest.raises(ValueError):  # escape count larger than the symbol count
        huffman.decode(b"\xff\xff\xff\x7f" + data[4:], index, GAUSSIANS)
    with pytest.raises(ValueError):  # an escaped value too large for int64
        huffman.decode(b"\x01\x00\x00\x00" + b"\xff" * 9 + b"\x7f" + data[4:], index,
                       GAUSSIANS)
    with pytest.raises(ValueError):  # the stream of a shorter symbol list
        huffman.decode(huffman.encode(symbols[:-100], index[:-100], GAUSSIANS), index, GAUSSIANS)
    with pytest.raises(ValueError):  # nonzero padding
        last = np.zeros(3, dtype=np.int64)
        good = huffman.encode(last, [0, 0, 0], GAUSSIANS)
        huffman.decode(good[:-1] + bytes([good[-1] | 1]), [0, 0, 0], GAUSSIANS)
    for size in (0, 1, 5, 4000):
        garbage = rng.integers(0, 256, size).astype(np.uint8).tobytes()
        with pytest.raises(ValueError):
            huffman.decode(b"\x00\x00\x00\x00" + garbage + b"\x01" * 4000, index, GAUSSIANS)
    # flipped bits may go unnoticed (no checksum) but must never crash or hang
    start = time.perf_counter()
    for _ in range(200):
        damaged = bytearray(data)
        damaged[int(rng.integers(4, len(data)))] ^= 1 << int(rng.integers(8))
        try:
            out = huffman.decode(bytes(damaged), index, GAUSSIANS)
        except ValueError:
            continue
        assert out.shape == symbols.shape and out.dtype == np.int64
    assert time.perf_counter() - start < 20


def test_speed_400k_symbols():
    rng = np.random.default_rng(10)
    symbols, index = _mixture(400_000, TYPICAL, rng)
    huffman.encode(symbols[:1000], index[:1000], GAUSSIANS)  # warm the code cache
    for table in GAUSSIANS:
        huffman._table_code(table)
    start = time.perf_counter()
    data = huffman.encode(symbols, index, GAUSSIANS)
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    huffman.decode(data, index, GAUSSIANS)
    decode_s = time.perf_counter() - start
    # typically ~0.04 s each way; loose bounds so a busy machine does not fail the suite
    assert encode_s < 1.0 and decode_s < 1.0, (encode_s, decode_s)
