"""Compare the Huffman fallback coder with the constriction range coder on synthetic latents.

Prints stream sizes and encode/decode times of both coders for latent-like mixtures of the
64 Gaussian scale tables and for hyper-latent-like skewed per-channel tables, so a change to
either coder can be checked against the size and speed budget of the Huffman backend
(within 5% of constriction's size; well under a second each way for 400k symbols).

    python benchmarks/huffman_vs_constriction.py [--symbols 400000] [--seed 0]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neuralcodec.entropy import constriction_coder, huffman  # noqa: E402
from neuralcodec.entropy.tables import (SymbolTable, gaussian_table, quantize_pmf,  # noqa: E402
                                        scale_table)

# name -> list of (share of symbols, lowest scale, highest scale)
MIXTURES = {
    "typical": [(0.6, 0.11, 0.3), (0.3, 0.3, 2.0), (0.1, 2.0, 20.0)],
    "low-rate": [(0.9, 0.11, 0.16), (0.07, 0.16, 1.0), (0.03, 1.0, 8.0)],
    "high-rate": [(0.2, 0.11, 0.3), (0.4, 0.3, 2.0), (0.3, 2.0, 20.0), (0.1, 20.0, 256.0)],
}


def latent_mixture(n: int, parts, rng: np.random.Generator):
    """Rounded zero-mean Gaussian samples whose scale index follows the mixture ``parts``."""
    scales = scale_table()
    index = np.empty(n, dtype=np.int64)
    shares = np.array([p[0] for p in parts])
    which = rng.choice(len(parts), size=n, p=shares / shares.sum())
    for k, (_, low, high) in enumerate(parts):
        allowed = np.flatnonzero((scales >= low * 0.999) & (scales <= high * 1.001))
        sel = which == k
        index[sel] = rng.choice(allowed, size=int(sel.sum()))
    symbols = np.round(rng.standard_normal(n) * scales[index]).astype(np.int64)
    return symbols, index


def skewed_tables(count: int, rng: np.random.Generator) -> list[SymbolTable]:
    """Learned-looking hyper-latent tables: shifted, asymmetric, sometimes very peaked."""
    tables = []
    for _ in range(count):
        width = int(rng.integers(3, 40))
        x = np.arange(-width, width + 1, dtype=np.float64)
        centre = rng.normal(0, 1.5)
        left, right = rng.uniform(0.1, 4.0, size=2)
        logits = -np.where(x < centre, (centre - x) / left, (x - centre) / right)
        pmf = np.exp(logits - logits.max())
        pmf /= pmf.sum()
        tables.append(SymbolTable(offset=-width, freqs=quantize_pmf(pmf * 0.9999, 1e-4)))
    return tables


def hyper_mixture(n: int, tables: list[SymbolTable], rng: np.random.Generator):
    """Symbols drawn from each channel's own table (escapes included), channel-major."""
    index = np.repeat(np.arange(len(tables)), -(-n // len(tables)))[:n]
    symbols = np.empty(n, dtype=np.int64)
    for t, table in enumerate(tables):
        sel = np.flatnonzero(index == t)
        p = table.freqs / table.freqs.sum()
        pos = rng.choice(len(p), size=len(sel), p=p)
        vals = pos + table.offset
        esc = pos == table.size
        k = int(esc.sum())
        vals[esc] = rng.choice([-1, 1], size=k) * rng.integers(100, 10**6, k)
        symbols[sel] = vals
    return symbols, index


def _timed(fn, *args, repeat: int = 3):
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn(*args)
        best = min(best, time.perf_counter() - start)
    return result, best


def compare(name: str, symbols, index, tables) -> None:
    c_bytes, c_enc = _timed(constriction_coder.encode, symbols, index, tables)
    c_out, c_dec = _timed(constriction_coder.decode, c_bytes, index, tables)
    h_bytes, h_enc = _timed(huffman.encode, symbols, index, tables)
    h_out, h_dec = _timed(huffman.decode, h_bytes, index, tables)
    assert np.array_equal(c_out, symbols) and np.array_equal(h_out, symbols)
    print(f"{name:10s} {len(symbols):8d} {len(c_bytes):10d} {len(h_bytes):10d} "
          f"{len(h_bytes) / len(c_bytes):7.4f}   {1e3 * c_enc:7.1f} {1e3 * c_dec:7.1f}   "
          f"{1e3 * h_enc:7.1f} {1e3 * h_dec:7.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=400_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)

    gaussians = [gaussian_table(s) for s in scale_table()]
    start = time.perf_counter()
    for table in gaussians:
        huffman._table_code(table)
    print(f"building Huffman codes for the 64 Gaussian tables: "
          f"{1e3 * (time.perf_counter() - start):.0f} ms (once per process)\n")
    print(f"{'mixture':10s} {'symbols':>8s} {'constr. B':>10s} {'huffman B':>10s} {'ratio':>7s}"
          f"   {'c enc ms':>7s} {'c dec ms':>7s}   {'h enc ms':>7s} {'h dec ms':>7s}")
    for name, parts in MIXTURES.items():
        symbols, index = latent_mixture(args.symbols, parts, rng)
        compare(name, symbols, index, gaussians)
    hyper = skewed_tables(192, rng)
    symbols, index = hyper_mixture(max(args.symbols // 16, 1), hyper, rng)
    compare("hyper", symbols, index, hyper)
    small, small_index = latent_mixture(3000, MIXTURES["typical"], rng)
    compare("small", small, small_index, gaussians)


if __name__ == "__main__":
    main()
