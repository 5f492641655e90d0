"""Range coding of integer symbols with `constriction`, driven by the shared integer tables.

Symbols are grouped by table (stable order inside a group) and each group is coded with one
fixed `Categorical` model, so the whole stream takes one vectorized call per table in use.
Stream layout: escape block (see `tables.pack_escapes`) followed by the range coder's
little-endian 32-bit words.
"""
from __future__ import annotations

import numpy as np

from .tables import SymbolTable, join_escapes, pack_escapes, split_escapes, unpack_escapes

NAME = "constriction"

try:  # the import is the availability test used by coder="auto"
    import constriction as _constriction
except ImportError:  # pragma: no cover - exercised only where constriction is missing
    _constriction = None


def available() -> bool:
    return _constriction is not None


_MODEL_CACHE: dict[bytes, object] = {}


def _model(table: SymbolTable):
    """constriction model for a table, cached by the table's content (equal tables share one)."""
    key = table.freqs.astype("<i8").tobytes()
    model = _MODEL_CACHE.get(key)
    if model is None:
        probabilities = table.freqs.astype(np.float64) / float(table.freqs.sum())
        model = _constriction.stream.model.Categorical(probabilities, perfect=False)
        _MODEL_CACHE[key] = model
    return model


def _groups(table_index: np.ndarray):
    order = np.argsort(table_index, kind="stable")
    used, starts = np.unique(table_index[order], return_index=True)
    bounds = np.append(starts, len(order))
    return order, used, bounds


def encode(symbols: np.ndarray, table_index: np.ndarray, tables: list[SymbolTable]) -> bytes:
    """Encode ``symbols[i]`` with ``tables[table_index[i]]``; returns the stream bytes."""
    if _constriction is None:
        raise RuntimeError("constriction is not installed")
    table_index = np.asarray(table_index, dtype=np.int64).ravel()
    positions, escaped = split_escapes(symbols, table_index, tables)
    encoder = _constriction.stream.queue.RangeEncoder()
    order, used, bounds = _groups(table_index)
    for k, t in enumerate(used.tolist()):
        chunk = positions[order[bounds[k]:bounds[k + 1]]].astype(np.int32)
        encoder.encode(chunk, _model(tables[t]))
    words = encoder.get_compressed().astype("<u4")
    return pack_escapes(escaped) + words.tobytes()


def decode(data: bytes, table_index: np.ndarray, tables: list[SymbolTable]) -> np.ndarray:
    """Inverse of `encode`; ``table_index`` must be the one used to encode."""
    if _constriction is None:
        raise RuntimeError("constriction is not installed")
    table_index = np.asarray(table_index, dtype=np.int64).ravel()
    escaped, pos = unpack_escapes(data, 0, limit=len(table_index))
    body = data[pos:]
    if len(body) % 4:
        raise ValueError("range-coded stream is not a whole number of 32-bit words")
    words = np.frombuffer(body, dtype="<u4").astype(np.uint32)
    decoder = _constriction.stream.queue.RangeDecoder(words)
    positions = np.empty(len(table_index), dtype=np.int64)
    order, used, bounds = _groups(table_index)
    try:
        for k, t in enumerate(used.tolist()):
            n = int(bounds[k + 1] - bounds[k])
            positions[order[bounds[k]:bounds[k + 1]]] = decoder.decode(_model(tables[t]), n)
    except (AssertionError, RuntimeError, ValueError) as exc:  # constriction asserts on bad data
        raise ValueError(f"range-coded stream is invalid ({exc})") from None
    if not decoder.maybe_exhausted():
        raise ValueError("range-coded stream has trailing data")
    return join_escapes(positions, escaped, table_index, tables)
