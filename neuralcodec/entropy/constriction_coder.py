"""Range coding of integer symbols with `constriction`, driven by the shared integer tables.

Symbols are grouped by table (stable order inside a group) and each group is coded with one
fixed `Categorical` model, so the whole stream takes one vectorized call per table in use (per
table and piece, for a stream coded in pieces: see `tables.piece_ranges`).
Stream layout: escape block (see `tables.pack_escapes`) followed by the range coder's
little-endian 32-bit words.
"""
from __future__ import annotations

import numpy as np

from .tables import (EscapeFeed, SymbolSink, SymbolTable, group_by_table, group_slices,
                     narrow_index, pack_escapes, piece_ranges, prepare_encode, unpack_escapes)

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


def encode(symbols: np.ndarray, table_index: np.ndarray, tables: list[SymbolTable],
           pieces=None) -> bytes:
    """Encode ``symbols[i]`` with ``tables[table_index[i]]``; returns the stream bytes.

    ``table_index`` may have any integer dtype (uint8 saves memory); work is done in chunks.
    ``pieces``: lengths of consecutive pieces, each grouped by table on its own so that a
    `PieceDecoder` can take them one at a time (None: one piece).
    """
    if _constriction is None:
        raise RuntimeError("constriction is not installed")
    symbols, table_index = np.ravel(symbols), np.ravel(table_index)
    if len(symbols) != len(table_index):
        raise ValueError("symbols and table_index differ in length")
    encoder = _constriction.stream.queue.RangeEncoder()
    escaped = []
    for start, stop in piece_ranges(len(symbols), pieces):
        order, bounds, collector = prepare_encode(symbols[start:stop], table_index[start:stop], len(tables))
        for t, a, b, _ in group_slices(bounds):
            positions = collector.positions(order[a:b], tables[t])
            if tables[t].size:   # an escape-only table is certain: nothing to code
                encoder.encode(positions.astype(np.int32), _model(tables[t]))
        del order
        escaped.append(collector.escaped())
    words = encoder.get_compressed().astype("<u4", copy=False)
    return pack_escapes(np.concatenate(escaped) if escaped else np.zeros(0, dtype=np.int64)) + words.tobytes()


class PieceDecoder:
    """Decodes a stream written by `encode` piece by piece: `decode` takes the table indexes
    of the next piece (which may be computed from the pieces before it); `close` checks that
    the stream held exactly what was asked for."""

    def __init__(self, data: bytes, count: int, tables: list[SymbolTable]):
        if _constriction is None:
            raise RuntimeError("constriction is not installed")
        self.tables = tables
        escaped, pos = unpack_escapes(data, 0, limit=count)
        self.feed = EscapeFeed(escaped, count)
        body = memoryview(data)[pos:]
        if len(body) % 4:
            raise ValueError("range-coded stream is not a whole number of 32-bit words")
        words = np.frombuffer(body, dtype="<u4").astype(np.uint32)
        self.decoder = _constriction.stream.queue.RangeDecoder(words)

    def decode(self, table_index: np.ndarray) -> np.ndarray:
        """The next ``len(table_index)`` symbols (int64)."""
        table_index = narrow_index(table_index, len(self.tables))
        self.feed.take(len(table_index))
        order, bounds = group_by_table(table_index, len(self.tables))
        sink = SymbolSink(len(table_index))
        try:
            for t, a, b, _ in group_slices(bounds):
                if self.tables[t].size:
                    positions = self.decoder.decode(_model(self.tables[t]), b - a)
                else:
                    positions = np.zeros(b - a, dtype=np.int32)   # all escapes
                sink.put(order[a:b], positions, self.tables[t])
        except (AssertionError, RuntimeError, ValueError) as exc:  # constriction asserts on bad data
            raise ValueError(f"range-coded stream is invalid ({exc})") from None
        del order
        return self.feed.finish(sink)

    def close(self) -> None:
        self.feed.check_done()
        if not self.decoder.maybe_exhausted():
            raise ValueError("range-coded stream has trailing data")


def decode(data: bytes, table_index: np.ndarray, tables: list[SymbolTable]) -> np.ndarray:
    """Inverse of `encode` with one piece; ``table_index`` must be the one used to encode."""
    decoder = PieceDecoder(data, len(table_index), tables)
    symbols = decoder.decode(table_index)
    decoder.close()
    return symbols
