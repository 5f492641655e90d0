"""Entropy coder streams are frozen: fixed random inputs must give the same bytes as the
reference implementation (sha256 recorded before the memory-saving rewrite), decode back
exactly, accept narrow table-index dtypes, and keep peak memory per symbol bounded."""
from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
from latentgen import mixture_index
import pytest

from neuralcodec.entropy import constriction_coder, huffman
from neuralcodec.entropy.tables import TOTAL, SymbolTable, gaussian_table, quantize_pmf, scale_table

GAUSSIANS = [gaussian_table(s) for s in scale_table()]
SCALES = scale_table()


def _random_tables(rng, count, low):
    tables = []
    for _ in range(count):
        size = int(rng.integers(low, 30))
        if size == 0:
            tables.append(SymbolTable(offset=0, freqs=np.array([TOTAL], dtype=np.int64)))
            continue
        pmf = rng.dirichlet(np.full(size, float(rng.choice([0.05, 0.5, 3.0]))))
        tables.append(SymbolTable(offset=int(rng.integers(-20, 5)),
                                  freqs=quantize_pmf(pmf, float(rng.uniform(0, 0.05)))))
    return tables


def _gaussian_case(seed, n):
    """Mostly low scales like real latents, a few escapes far outside the tables."""
    rng = np.random.default_rng(seed)
    parts = [(0.6, 0.11, 0.3), (0.3, 0.3, 2.0), (0.1, 2.0, 256.0)]
    index = mixture_index(n, parts, rng, SCALES)
    symbols = np.round(rng.standard_normal(n) * SCALES[index] * 1.3).astype(np.int64)
    far = rng.random(n) < 0.001
    symbols[far] = rng.integers(-(1 << 40), 1 << 40, int(far.sum()))
    return symbols, index, GAUSSIANS


def _random_case(seed, n, count, low=1):
    rng = np.random.default_rng(seed)
    tables = _random_tables(rng, count, low)
    index = rng.integers(0, count, n)
    symbols = rng.integers(-30, 40, n)
    return symbols, index, tables


def _cases():
    yield "gauss-200k", _gaussian_case(1, 200_000)
    yield "gauss-3k", _gaussian_case(2, 3_000)
    yield "random-50k", _random_case(3, 50_000, 40)
    yield "random-300-tables", _random_case(4, 20_000, 300)
    yield "random-escape-only-tables", _random_case(6, 30_000, 50, low=0)
    yield "one", (np.array([5]), np.array([7]), GAUSSIANS)
    yield "empty", (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), GAUSSIANS)
    rng = np.random.default_rng(5)
    z_index = np.repeat(np.arange(32), 700)   # z-like: table = channel, contiguous groups
    yield "channels", (np.round(rng.standard_normal(len(z_index)) * 3).astype(np.int64),
                       z_index, GAUSSIANS[:32])


# sha256 of the streams the reference (pre-rewrite) implementation wrote for `_cases()`.
EXPECTED = {
    ("huffman", "gauss-200k"): "0666e132bdb85ab41df982cbcf5078d864128e49642a81bdc41e5591df697268",
    ("huffman", "gauss-3k"): "ab886c838d8c1af144b84cd551604b9524e2dd22818f27dd6ffbf220686f193b",
    ("huffman", "random-50k"): "bc36e85514f12bf6fd225d2d3d0e1a64a146fa3574e8b78119a5bc4b7525cf06",
    ("huffman", "random-300-tables"): "7754a5e72fd8757e7a5f6275ce212702a3854b1cd8cd1966100a196960a79141",
    ("huffman", "random-escape-only-tables"): "13bebcc3b118f1a459ce0b9ff05dc37dd01e3022663a07232c27b50a645ca2c8",
    ("huffman", "one"): "69e671fef0dd3df34e193cdc0f8d586451ef3804bbbf0368d044679e99e1b4c4",
    ("huffman", "empty"): "df3f619804a92fdb4057192dc43dd748ea778adc52bc498ce80524c014b81119",
    ("huffman", "channels"): "6afc1d42f9ac81b5bb8ef8218db7aa7ed592cc451abd3b109dae2af6276251a5",
    ("constriction", "gauss-200k"): "6a29ebd09319b600767d2a8c5b1fb81924b1fff0fd1cc271e24de9ac65714a9f",
    ("constriction", "gauss-3k"): "80da3636b95013c5458859ce0238120b256b40776d2edbb052cbb8b0fc10c23c",
    ("constriction", "random-50k"): "355aaa88ba7fc6b14377bff2de1c4374c235fa55c09ce1736a45c6962f42d2dc",
    ("constriction", "random-300-tables"): "4a5f6b28cbeb76442ac11797dfc202560ba8b936061d185a572cde78a2f5407c",
    ("constriction", "one"): "19170adb5542cd9498972204e48edfc9037060e5acc5686b0eedc4c80b44ec77",
    ("constriction", "empty"): "df3f619804a92fdb4057192dc43dd748ea778adc52bc498ce80524c014b81119",
    ("constriction", "channels"): "09f846e7b915d33c7ecff7b2a33ce1154a616a8abc08c319cc33b2d7af58c6fa",
    ("constriction", "random-escape-only-tables"):
        "f06ee29b9578e3354bd3a459e9aa98516179e58bf7e198968418a2d4c551af74",
}

# the same cases cut into pieces of n/5, 0, n/3, 1 and the rest symbols (written by vaez 1.5)
PIECES_EXPECTED = {
    ("huffman", "gauss-3k"): "383b4d8348858c19d773e02926a58c8f9d758f57f4e72bcf47004b981806e4ba",
    ("huffman", "random-50k"): "db3065df8f3504414a9c22380fd4ea154cc3a25ece912c660c825077ce3735a9",
    ("huffman", "random-escape-only-tables"): "ab0d0fbd5e3484471d6b08d51160527890552a7152cc0b9aa0ff5fe15a820fff",
    ("huffman", "channels"): "6afc1d42f9ac81b5bb8ef8218db7aa7ed592cc451abd3b109dae2af6276251a5",
    ("constriction", "gauss-3k"): "a6505a49a1d2ad68ee6f3f60d6112293232035b3cd5131b600720d229182ba36",
    ("constriction", "random-50k"): "9f46334369209961f52565630afb6eb7057d55f73f367286931b8ab48f2c9186",
    ("constriction", "random-escape-only-tables"):
        "69d8b879ee86489108e54a1ca201a405d65fdaa5605c711231063dffe6881711",
    ("constriction", "channels"): "09f846e7b915d33c7ecff7b2a33ce1154a616a8abc08c319cc33b2d7af58c6fa",
}

BACKENDS = [huffman] + ([constriction_coder] if constriction_coder.available() else [])


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.NAME)
@pytest.mark.parametrize("name,case", list(_cases()), ids=[n for n, _ in _cases()])
def test_streams_frozen_and_roundtrip(backend, name, case):
    symbols, index, tables = case
    data = backend.encode(symbols, index, tables)
    assert _digest(data) == EXPECTED[(backend.NAME, name)]
    out = backend.decode(data, index, tables)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, symbols)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.NAME)
@pytest.mark.parametrize("chunk,name", [(1000, "gauss-200k"), (7, "gauss-3k"), (5, "channels"),
                                        (64, "random-50k")])
def test_streams_frozen_with_small_chunks(monkeypatch, backend, chunk, name):
    """Cutting groups into pieces (run-length carries, bit packing) leaves the bytes alone."""
    from neuralcodec.entropy import tables as tables_module

    monkeypatch.setattr(tables_module, "CHUNK", chunk)
    monkeypatch.setattr(huffman, "CHUNK", chunk)
    monkeypatch.setattr(huffman, "_PACK_TOKENS", max(1, chunk // 3))
    symbols, index, tables = dict(_cases())[name]
    data = backend.encode(symbols, index, tables)
    assert _digest(data) == EXPECTED[(backend.NAME, name)]
    np.testing.assert_array_equal(backend.decode(data, index, tables), symbols)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.NAME)
@pytest.mark.parametrize("name", ["gauss-3k", "random-50k", "random-escape-only-tables", "channels"])
def test_pieces_decode_one_at_a_time(backend, name):
    """A stream in pieces (each grouped by table on its own, escapes included) decodes piece
    by piece, each piece knowing only its own tables; one piece is the plain stream. The
    digests freeze the layout (`formats/VAEZ.md`, "Grouping"): a change fails here first."""
    symbols, index, tables = dict(_cases())[name]
    n = len(symbols)
    lengths = [n // 5, 0, n // 3, 1, n - n // 5 - n // 3 - 1]
    data = backend.encode(symbols, index, tables, pieces=lengths)
    assert _digest(data) == PIECES_EXPECTED[(backend.NAME, name)]
    assert backend.encode(symbols, index, tables, pieces=[n]) == backend.encode(symbols, index, tables)
    decoder = backend.PieceDecoder(data, n, tables)
    start = 0
    for k in lengths:
        out = decoder.decode(index[start:start + k])
        np.testing.assert_array_equal(out, symbols[start:start + k])
        start += k
    decoder.close()


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.NAME)
def test_pieces_misuse_is_a_clear_error(backend):
    symbols, index, tables = dict(_cases())["gauss-3k"]
    with pytest.raises(ValueError, match="do not add up"):
        backend.encode(symbols, index, tables, pieces=[10, 10])
    with pytest.raises(ValueError, match="differ in length"):
        backend.encode(symbols[:-1], index, tables, pieces=[2999])
    empty = backend.encode(symbols[:0], index[:0], tables, pieces=[])
    assert empty == backend.encode(symbols[:0], index[:0], tables)
    data = backend.encode(symbols, index, tables, pieces=[1000, 2000])
    decoder = backend.PieceDecoder(data, 3000, tables)
    decoder.decode(index[:1000])
    with pytest.raises(ValueError, match="never decoded"):
        decoder.close()
    with pytest.raises(ValueError, match="more symbols"):
        decoder.decode(np.zeros(2001, dtype=np.int64))


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.NAME)
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.uint16, np.int32, np.uint64])
def test_narrow_index_dtypes(backend, dtype):
    symbols, index, tables = dict(_cases())["gauss-3k"]
    data = backend.encode(symbols, index.astype(dtype), tables)
    assert _digest(data) == EXPECTED[(backend.NAME, "gauss-3k")]
    np.testing.assert_array_equal(backend.decode(data, index.astype(dtype), tables), symbols)
    # a broadcast (non-contiguous) index, like the codec's z index, works too
    z = np.broadcast_to(np.arange(4, dtype=dtype)[:, None], (4, 50))
    zs = np.arange(200).reshape(4, 50) % 5 - 2
    out = backend.decode(backend.encode(zs.ravel(), z.ravel(), tables[30:34]), z.ravel(), tables[30:34])
    np.testing.assert_array_equal(out, zs.ravel())


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.NAME)
def test_index_out_of_range_raises(backend):
    with pytest.raises(ValueError):
        backend.encode(np.zeros(3, dtype=np.int64), np.array([0, 1, 64]), GAUSSIANS)
    with pytest.raises(ValueError):
        backend.decode(b"\0\0\0\0", np.array([0, -1]), GAUSSIANS)


_MEMORY_SCRIPT = textwrap.dedent("""
    import sys, tracemalloc
    import numpy as np
    from neuralcodec.entropy import constriction_coder, huffman
    from neuralcodec.entropy.tables import gaussian_table, scale_table
    backend = huffman if sys.argv[1] == "huffman" else constriction_coder
    n = 600_000
    tables = [gaussian_table(s) for s in scale_table()]
    rng = np.random.default_rng(0)
    index = rng.choice(64, size=n, p=np.r_[np.full(11, 0.6 / 11), np.full(15, 0.3 / 15),
                                           np.full(38, 0.1 / 38)])
    symbols = np.round(rng.standard_normal(n) * scale_table()[index]).astype(np.int64)
    index = index.astype(np.uint8)
    data = backend.encode(symbols, index, tables)
    tracemalloc.start()
    backend.encode(symbols, index, tables)
    enc = tracemalloc.get_traced_memory()[1]
    tracemalloc.reset_peak()
    out = backend.decode(data, index, tables)
    dec = tracemalloc.get_traced_memory()[1] - out.nbytes
    print(enc / n, dec / n)
""")


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.NAME)
def test_peak_memory_per_symbol(backend):
    """Coders' own peak memory stays a few bytes per symbol (was 40-60 before chunking)."""
    result = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, backend.NAME],
                            capture_output=True, text=True, check=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[1])
    enc, dec = map(float, result.stdout.split())
    assert enc < 16 and dec < 16, (enc, dec)
