"""Pure numpy Huffman coding of integer symbols, driven by the shared integer tables.

This is the fallback coder for machines without `constriction`: it reads and writes the same
inputs (symbols, per-symbol table index, `SymbolTable`s) and needs nothing beyond numpy. It
must stay close to range-coding size even for the near-deterministic low-scale latent tables
(P(mode) up to 0.99995), where one Huffman code word per symbol would cost at least a bit.

How sizes stay close to the entropy: each table gets a run-length alphabet. With ``m`` the
table's most probable entry (its *mode*) and ``R >= 1`` a run limit chosen per table, a token
is either "``r`` copies of ``m`` followed by the non-mode entry ``s``" (``0 <= r < R``) or
"``R`` copies of ``m``". Token probabilities are ``p(m)**r * p(s)`` and ``p(m)**R``; ``R`` = 1
is plain Huffman. Every token alphabet gets an optimal length-limited (<= `MAX_BITS`) code via
package-merge, and the ``R`` with the fewest expected bits per symbol wins. A segment's
trailing run of mode symbols ends with one "``R`` copies" token, cut short by the decoder,
which knows how many symbols each table models. The escape entry is an ordinary entry of
the alphabet; escaped values are stored exactly as the constriction backend stores them.

Determinism: the codes are computed from the integer frequencies with integer arithmetic
only (fixed-point powers of ``p(m)``, integer package-merge, index-ordered tie breaks), so
every machine derives identical codes. They are cached by table contents.

Stream layout: escape block (`tables.pack_escapes`), then one bit string, MSB first, zero
padded to whole bytes. It holds the tables' segments back to back in increasing table index,
each segment coding that table's symbols in their stream order (for a stream coded in pieces,
piece after piece, each with its own segments: see `tables.piece_ranges`). No segment lengths are
stored (they would cost about one to three bytes per table in use); the decoder finds where
each segment ends by decoding it. Decoding is vectorised: in a window of the bit string it
computes the token that would start at every bit position (canonical-code thresholds, no
large lookup table), enumerates the chain of token starts from the window's first bit by
pointer doubling, and expands tokens to symbols with numpy. Corrupt or truncated input
raises `ValueError`; like the range coder, a flipped bit inside the bit string can also
decode silently to other symbols, since the format carries no checksum.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate

import numpy as np

from .tables import (CHUNK, PRECISION, TOTAL, EscapeFeed, SymbolSink, SymbolTable,
                     group_by_table, group_slices, narrow_index, pack_escapes, piece_ranges,
                     prepare_encode, unpack_escapes)

NAME = "huffman"

MAX_BITS = 24            # longest code word; the decoder peeks this many bits at a time
MAX_TOKENS = 1 << 17     # largest run-length alphabet considered for one table
_LADDER_TOKENS = 4096    # alphabet size up to which every ladder run limit is tried
_ONE = 1 << 36           # fixed-point 1.0 for powers of p(mode)
_CACHE_LIMIT = 4096
_MAX_WINDOW = 1 << 19   # bit positions decoded per step: bounds decoder memory
_PACK_TOKENS = 1 << 16  # code words turned into bits per step: bounds encoder memory


def available() -> bool:
    return True


@dataclass(frozen=True)
class _Code:
    """One table's run-length alphabet and its canonical Huffman code."""

    run: int                 # R
    mode: int                # table position of the most probable entry
    lengths: np.ndarray      # int64 per token id: code length in bits (0 for an unused table)
    codes: np.ndarray        # int64 per token id: code word (right aligned)
    nsym: np.ndarray         # int64 per token id: symbols the token stands for
    value: np.ndarray        # int64 per token id: its final table position (mode for runs)
    max_len: int             # L, longest code word
    upper: np.ndarray        # int64 [L]: left-aligned (L bits) end of the lengths 1..L
    first: np.ndarray        # int64 [L+1]: first code of each length, then 0 (invalid)
    base: np.ndarray         # int64 [L+1]: rank of the first token of each length, then 0
    shift: np.ndarray        # int64 [L+1]: L - length, then 0
    by_rank: np.ndarray      # int64: token ids in canonical order
    bits_per_symbol: float   # expected cost, only used to size decoding windows


_CODES: dict[bytes, _Code] = {}


def _table_code(table: SymbolTable) -> _Code:
    freqs = np.asarray(table.freqs)
    key = freqs.astype("<i8").tobytes()
    code = _CODES.get(key)
    if code is None:
        code = _build_code(freqs.astype(np.int64))
        if len(_CODES) >= _CACHE_LIMIT:
            _CODES.clear()
        _CODES[key] = code
    return code


# ----------------------------------------------------------------------------------------
# code construction


def _limited_lengths(weights: np.ndarray, limit: int) -> np.ndarray:
    """Optimal prefix-code lengths (<= ``limit``) for integer ``weights`` by package-merge.

    The coin-collector lists are merged with numpy; ties put leaves before packages and
    order leaves by index, so the result depends on the integer weights alone.
    """
    n = len(weights)
    limit = min(limit, n - 1)  # no optimal code is deeper than n-1
    order = np.argsort(weights, kind="stable")
    leaves = weights[order]
    # masks[j]: which items of the list for depth limit-j are leaves; the deepest is all leaves.
    masks = []
    current = leaves
    current_is_leaf = np.ones(n, dtype=bool)
    for _ in range(limit - 1):
        masks.append(current_is_leaf)
        half = len(current) // 2
        packages = current[0:2 * half:2] + current[1:2 * half:2]
        # a stable sort of two sorted runs is a linear merge; equal weights keep leaves first
        joined = np.concatenate((leaves, packages))
        perm = np.argsort(joined, kind="stable")
        merged = joined[perm]
        is_leaf = perm < n
        current, current_is_leaf = merged, is_leaf
    masks.append(current_is_leaf)
    # Select 2n-2 items from the shallowest list; unwind packages level by level.
    depth_hits = np.zeros(n + 1, dtype=np.int64)
    take = 2 * n - 2
    for is_leaf in reversed(masks):
        if take <= 0:
            break
        leaves_taken = int(np.count_nonzero(is_leaf[:take]))
        depth_hits[leaves_taken] += 1
        take = 2 * (take - leaves_taken)
    # leaf i (ascending weight) is selected at every level that took more than i leaves
    sorted_lengths = np.cumsum(depth_hits[::-1])[::-1][1:]
    lengths = np.empty(n, dtype=np.int64)
    lengths[order] = sorted_lengths
    return lengths


def _canonical(lengths: np.ndarray):
    """Canonical code words for ``lengths`` (shorter first, then lower token id)."""
    max_len = int(lengths.max())
    by_rank = np.lexsort((np.arange(len(lengths)), lengths))
    counts = np.bincount(lengths, minlength=max_len + 1)
    first = np.zeros(max_len + 1, dtype=np.int64)
    code = 0
    for length in range(1, max_len + 1):
        code = (code + int(counts[length - 1])) << 1
        first[length] = code
    base = np.concatenate(([0], np.cumsum(counts)[:-1]))  # rank of first token of a length
    codes = np.empty(len(lengths), dtype=np.int64)
    sorted_len = lengths[by_rank]
    codes[by_rank] = first[sorted_len] + (np.arange(len(lengths)) - base[sorted_len])
    if int(codes[by_rank[-1]]) >= (1 << max_len):
        raise AssertionError("lengths violate the Kraft inequality")
    levels = np.arange(1, max_len + 1)
    upper = (first[levels] + counts[levels]) << (max_len - levels)
    pad = np.zeros(1, dtype=np.int64)
    return (codes, max_len, upper.astype(np.int64), np.concatenate((first[levels], pad)),
            np.concatenate((base[levels], pad)),
            np.concatenate(((max_len - levels).astype(np.int64), pad)),
            by_rank.astype(np.int64))


def _run_candidates(half: int, others: int) -> list[int]:
    """Run limits worth trying for a table with ``others`` non-mode entries.

    A ladder of small limits while the alphabet stays small (bigger alphabets let Huffman
    lengths follow the probabilities more closely), plus limits near ``half``, the shortest
    run with ``p(mode)**R <= 1/2``, where a run of ``R`` mode symbols costs about one bit.
    """
    cap = max(1, (MAX_TOKENS - 1) // others)
    chosen = {half}
    if half * others <= _LADDER_TOKENS * 8:  # near-misses only where they are cheap to try
        chosen |= {(half * 7) // 10, (half * 10) // 7}
    r = 1
    while r * others <= _LADDER_TOKENS:
        chosen.add(r)
        r = r + 1 if r < 4 else r + r // 2
    return sorted(x for x in chosen if 1 <= x <= cap)


def _build_code(freqs: np.ndarray) -> _Code:
    if freqs.ndim != 1 or len(freqs) < 1 or int(freqs.min()) < 1 or int(freqs.sum()) != TOTAL:
        raise ValueError("a symbol table needs frequencies >= 1 summing to 2**%d" % PRECISION)
    n = len(freqs)
    mode = int(np.argmax(freqs))
    f_mode = int(freqs[mode])
    others = np.delete(np.arange(n), mode)
    if n == 1:  # only the escape entry: every symbol is known, nothing is written
        one = np.ones(1, dtype=np.int64)
        zero1 = np.zeros(1, dtype=np.int64)
        return _Code(run=1, mode=0, lengths=zero1, codes=zero1, nsym=one, value=zero1,
                     max_len=0, upper=np.zeros(0, dtype=np.int64), first=zero1, base=zero1,
                     shift=zero1, by_rank=zero1, bits_per_symbol=0.0)
    f_other = freqs[others]
    rest = TOTAL - f_mode
    # Fixed-point powers p(mode)**r, computed the same way everywhere.
    powers = [_ONE]
    while 2 * powers[-1] > _ONE:
        powers.append((powers[-1] * f_mode) >> PRECISION)
    candidates = _run_candidates(len(powers) - 1 or 1, len(others))
    while len(powers) <= candidates[-1]:
        powers.append((powers[-1] * f_mode) >> PRECISION)
    weighted_runs = list(accumulate((r + 1) * p for r, p in enumerate(powers)))
    best = None
    for run in candidates:
        if run >= len(powers) or powers[run] == 0:
            continue
        p_run = np.array(powers[:run], dtype=np.int64)
        weights = np.append((p_run[:, None] * f_other[None, :]).ravel(),
                            powers[run] << PRECISION)
        lengths = _limited_lengths(weights, MAX_BITS)
        bits = int((weights * lengths).sum())
        syms = weighted_runs[run - 1] * rest + run * (powers[run] << PRECISION)
        if best is None or bits * best[2] < best[1] * syms:
            best = (run, bits, syms, lengths)
    run, bits, syms, lengths = best
    codes, max_len, upper, first, base, shift, by_rank = _canonical(lengths)
    tokens = len(lengths)
    r_of = np.arange(tokens - 1) // len(others)
    nsym = np.append(r_of + 1, run).astype(np.int64)
    value = np.append(np.tile(others, run), mode).astype(np.int64)
    return _Code(run=run, mode=mode, lengths=lengths, codes=codes, nsym=nsym, value=value,
                 max_len=max_len, upper=upper, first=first, base=base, shift=shift,
                 by_rank=by_rank, bits_per_symbol=bits / syms)


# ----------------------------------------------------------------------------------------
# encoding


def _tokenize(positions: np.ndarray, code: _Code, lead: int = 0,
              final: bool = True) -> tuple[np.ndarray, int]:
    """Token ids for a piece of one table's positions, in order; returns ``(tokens, carry)``.

    ``lead`` (< R) mode symbols carried over from the previous piece come first. With
    ``final`` the trailing mode symbols end with one cut-short run token and ``carry`` is 0;
    otherwise only whole runs are emitted and the rest (< R) is returned as ``carry``. Any
    cut of a segment into pieces gives the same tokens as the whole segment.
    """
    if code.max_len == 0:
        return np.zeros(0, dtype=np.int64), 0
    run, mode = code.run, code.mode
    n_other = (len(code.lengths) - 1) // run
    run_token = len(code.lengths) - 1
    hits = np.flatnonzero(positions != mode)
    vals = positions[hits]
    other_rank = vals - (vals > mode)
    gaps = np.diff(hits, prepend=-1) - 1          # mode symbols before each non-mode one
    if len(gaps):
        gaps[0] += lead
    full, partial = np.divmod(gaps, run)
    tail = len(positions) - 1 - (int(hits[-1]) if len(hits) else -1)
    if not len(hits):
        tail += lead
    if final:
        n_tail, carry = -(-tail // run), 0
    else:
        n_tail, carry = divmod(tail, run)
    per_hit = full + 1
    ends = np.cumsum(per_hit)
    tokens = np.full(int(ends[-1]) + n_tail if len(ends) else n_tail, run_token, dtype=np.int64)
    tokens[ends - 1] = partial * n_other + other_rank
    return tokens, carry


class _BitWriter:
    """Code words appended MSB first, packed to bytes a bounded number of tokens at a time."""

    def __init__(self):
        self._parts: list[bytes] = []
        self._pending = np.zeros(0, dtype=np.uint8)   # < 8 bits not yet packed

    def write(self, words: np.ndarray, lengths: np.ndarray) -> None:
        for a in range(0, len(words), _PACK_TOKENS):
            w, n = words[a:a + _PACK_TOKENS], lengths[a:a + _PACK_TOKENS]
            ends = np.cumsum(n)
            total = int(ends[-1])
            if not total:
                continue
            rep_shift = np.repeat(ends - 1, n)
            rep_shift -= np.arange(total)
            bits = ((np.repeat(w, n) >> rep_shift) & 1).astype(np.uint8)
            del rep_shift
            if len(self._pending):
                bits = np.concatenate((self._pending, bits))
            whole = len(bits) & ~7
            self._parts.append(np.packbits(bits[:whole]).tobytes())
            self._pending = bits[whole:].copy()

    def getvalue(self) -> bytes:
        if len(self._pending):   # zero padded to a whole byte
            self._parts.append(np.packbits(self._pending).tobytes())
            self._pending = self._pending[:0]
        return b"".join(self._parts)


def encode(symbols: np.ndarray, table_index: np.ndarray, tables: list[SymbolTable],
           pieces=None) -> bytes:
    """Encode ``symbols[i]`` with ``tables[table_index[i]]``; returns the stream bytes.

    ``table_index`` may have any integer dtype (uint8 saves memory); work is done in chunks.
    ``pieces``: lengths of consecutive pieces, each grouped by table on its own so that a
    `PieceDecoder` can take them one at a time (None: one piece).
    """
    symbols, table_index = np.ravel(symbols), np.ravel(table_index)
    if len(symbols) != len(table_index):
        raise ValueError("symbols and table_index differ in length")
    writer = _BitWriter()
    escaped = []
    for start, stop in piece_ranges(len(symbols), pieces):
        order, bounds, collector = prepare_encode(symbols[start:stop], table_index[start:stop], len(tables))
        carry = 0
        for t, a, b, last in group_slices(bounds):
            code = _table_code(tables[t])
            positions = collector.positions(order[a:b], tables[t])
            tokens, carry = _tokenize(positions, code, carry, last)
            if len(tokens):
                writer.write(code.codes[tokens], code.lengths[tokens])
        del order
        escaped.append(collector.escaped())
    return pack_escapes(np.concatenate(escaped) if escaped else np.zeros(0, dtype=np.int64)) + writer.getvalue()


# ----------------------------------------------------------------------------------------
# decoding


def _chain(nxt: np.ndarray, end: int, enough) -> np.ndarray:
    """Positions reached from 0 by following ``nxt`` (``nxt[end] == end`` stops), in order.

    Pointer doubling: ``reach`` holds steps 0..2**k-1 and ``jump`` is ``nxt`` applied 2**k
    times, so appending ``jump[reach]`` doubles the known prefix. ``enough(prefix)`` may stop
    early once the caller has what it needs.
    """
    reach = np.zeros(1, dtype=np.int64)
    jump = None
    while reach[-1] != end and not enough(reach):
        jump = nxt if jump is None else jump[jump]
        reach = np.concatenate((reach, jump[reach]))
    stop = int(np.searchsorted(reach, end))
    return reach[:stop]


def _decode_segment(padded: np.ndarray, total_bits: int, start: int, count: int,
                    code: _Code) -> tuple[np.ndarray, int]:
    """Decode ``count`` positions of one table from bit ``start``; returns them and the end.

    ``padded`` is the bit string's bytes followed by 8 zero bytes. The positions come back in
    the narrowest of int16 / int32 that holds them.
    """
    out = np.full(count, code.mode,
                  dtype=np.int16 if int(code.value.max()) < 1 << 15 else np.int32)
    if code.max_len == 0 or count == 0:
        return out, start
    max_len = code.max_len
    pos, done = start, 0
    window = min(int(count * code.bits_per_symbol * 1.1) + 4 * max_len + 64, _MAX_WINDOW)
    while done < count:
        if pos >= total_bits:
            raise ValueError("coded stream truncated")
        width = min(window, total_bits - pos)
        first_byte = pos >> 3
        nbytes = ((pos + width - 1) >> 3) - first_byte + 1
        wide = np.zeros(nbytes, dtype=np.uint64)   # 64 bits starting at each byte
        for k in range(8):
            part = padded[first_byte + k:first_byte + k + nbytes].astype(np.uint64)
            part <<= np.uint64(56 - 8 * k)
            wide |= part
        at = np.arange(pos - 8 * first_byte, pos - 8 * first_byte + width, dtype=np.int64)
        peek = (wide[at >> 3] << (at & 7).astype(np.uint64)) >> np.uint64(64 - max_len)
        peek = peek.astype(np.int64)
        level = np.searchsorted(code.upper, peek, side="right")
        tok_rank = code.base[level] + (peek >> code.shift[level]) - code.first[level]
        np.clip(tok_rank, 0, len(code.by_rank) - 1, out=tok_rank)
        nxt = np.append(np.arange(width) + level + 1, width)
        np.minimum(nxt, width, out=nxt)
        nxt[:width][level == max_len] = width   # no code word starts here: stop the chain
        need = count - done
        nsym_at = code.nsym[code.by_rank[tok_rank]]

        def enough(prefix, nsym_at=nsym_at, need=need):
            return int(nsym_at[prefix].sum()) >= need

        chain = _chain(nxt, width, enough)      # never empty: position 0 < width
        tokens = code.by_rank[tok_rank[chain]]
        filled = np.cumsum(code.nsym[tokens])
        if int(filled[-1]) >= need:
            last = int(np.searchsorted(filled, need))
            tokens, chain, filled = tokens[:last + 1], chain[:last + 1], filled[:last + 1]
            if int(filled[-1]) > need and int(tokens[-1]) != len(code.lengths) - 1:
                raise ValueError("coded segment overruns its symbol count")
        if level[chain[-1]] == max_len:           # only possible with an incomplete code
            raise ValueError("invalid code word in coded stream")
        marks = tokens != len(code.lengths) - 1   # runs leave the mode already in `out`
        out[done + filled[marks] - 1] = code.value[tokens[marks]]
        done += min(int(filled[-1]), need)
        pos = pos + int(chain[-1]) + int(code.lengths[tokens[-1]])
        if pos > total_bits:
            raise ValueError("coded stream truncated")
        window = min(2 * window, _MAX_WINDOW)
    return out, pos


class PieceDecoder:
    """Decodes a stream written by `encode` piece by piece: `decode` takes the table indexes
    of the next piece (which may be computed from the pieces before it); `close` checks that
    the stream held exactly what was asked for, padding included."""

    def __init__(self, data: bytes, count: int, tables: list[SymbolTable]):
        data = bytes(data)
        self.tables = tables
        try:
            escaped, pos = unpack_escapes(data, 0, limit=count)
        except OverflowError as error:  # a 10-byte varint can exceed int64
            raise ValueError("escaped value out of range") from error
        self.feed = EscapeFeed(escaped, count)
        self.payload = np.frombuffer(data, dtype=np.uint8, offset=pos)
        self.total_bits = 8 * len(self.payload)
        self.padded = np.concatenate((self.payload, np.zeros(8, dtype=np.uint8)))
        self.bit = 0

    def decode(self, table_index: np.ndarray) -> np.ndarray:
        """The next ``len(table_index)`` symbols (int64)."""
        table_index = narrow_index(table_index, len(self.tables))
        self.feed.take(len(table_index))
        order, bounds = group_by_table(table_index, len(self.tables))
        sink = SymbolSink(len(table_index))
        for t in np.flatnonzero(np.diff(bounds)).tolist():
            lo, hi = int(bounds[t]), int(bounds[t + 1])
            values, self.bit = _decode_segment(self.padded, self.total_bits, self.bit, hi - lo,
                                               _table_code(self.tables[t]))
            for a in range(lo, hi, CHUNK):
                b = min(a + CHUNK, hi)
                sink.put(order[a:b], values[a - lo:b - lo], self.tables[t])
            del values
        del order
        return self.feed.finish(sink)

    def close(self) -> None:
        self.feed.check_done()
        bit, payload = self.bit, self.payload
        if (bit + 7) // 8 != len(payload):
            raise ValueError("coded stream has trailing bytes")
        if bit % 8 and int(payload[-1]) & ((1 << (8 - bit % 8)) - 1):
            raise ValueError("nonzero padding bits at the end of the coded stream")


def decode(data: bytes, table_index: np.ndarray, tables: list[SymbolTable]) -> np.ndarray:
    """Inverse of `encode` with one piece; ``table_index`` must be the one used to encode."""
    decoder = PieceDecoder(data, len(table_index), tables)
    symbols = decoder.decode(table_index)
    decoder.close()
    return symbols
