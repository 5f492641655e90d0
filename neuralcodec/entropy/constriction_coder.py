"""Range coding of integer symbols with `constriction`, driven by the shared integer tables.

Symbols are grouped by table (stable order inside a group) and each group is coded with one
fixed `Categorical` model, so the whole stream takes one vectorized call per table in use.
Stream layout: escape block (see `tables.pack_escapes`) followed by the range coder's
little-endian 32-bit words.
"""
from __future__ import annotations

import numpy as np

from .tables import (SymbolSink, SymbolTable, group_by_table, group_slices,
                     narrow_index, pack_escapes, prepare_encode, unpack_escapes)

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


def encode(symbols: np.ndarray, table_index: np.ndarray, tables: list[SymbolTable]) -> bytes:
    """Encode ``symbols[i]`` with ``tables[table_index[i]]``; returns the stream bytes.

    ``table_index`` may have any integer dtype (uint8 saves memory); work is done in chunks.
    """
    if _constriction is None:
        raise RuntimeError("constriction is not installed")
    order, bounds, collector = prepare_encode(symbols, table_index, len(tables))
    encoder = _constriction.stream.queue.RangeEncoder()
    for t, a, b, _ in group_slices(bounds):
        positions = collector.positions(order[a:b], tables[t])
        if tables[t].size:   # an escape-only table is certain: nothing to code
            encoder.encode(positions.astype(np.int32), _model(tables[t]))
    del order
    words = encoder.get_compressed().astype("<u4", copy=False)
    return pack_escapes(collector.escaped()) + words.tobytes()


def decode(data: bytes, table_index: np.ndarray, tables: list[SymbolTable]) -> np.ndarray:
    """Inverse of `encode`; ``table_index`` must be the one used to encode."""
    if _constriction is None:
        raise RuntimeError("constriction is not installed")
    table_index = narrow_index(table_index, len(tables))
    escaped, pos = unpack_escapes(data, 0, limit=len(table_index))
    body = memoryview(data)[pos:]
    if len(body) % 4:
        raise ValueError("range-coded stream is not a whole number of 32-bit words")
    words = np.frombuffer(body, dtype="<u4").astype(np.uint32)
    decoder = _constriction.stream.queue.RangeDecoder(words)
    del words
    order, bounds = group_by_table(table_index, len(tables))
    sink = SymbolSink(len(table_index))
    try:
        for t, a, b, _ in group_slices(bounds):
            if tables[t].size:
                positions = decoder.decode(_model(tables[t]), b - a)
            else:
                positions = np.zeros(b - a, dtype=np.int32)   # all escapes
            sink.put(order[a:b], positions, tables[t])
    except (AssertionError, RuntimeError, ValueError) as exc:  # constriction asserts on bad data
        raise ValueError(f"range-coded stream is invalid ({exc})") from None
    if not decoder.maybe_exhausted():
        raise ValueError("range-coded stream has trailing data")
    del order
    return sink.finish(escaped)
