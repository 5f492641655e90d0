"""Encoder-side refinement of the coded symbols (``effort``): smaller files, same decoder.

Rounding every latent to the nearest integer is the best choice for each symbol alone, not for
the image: some symbols cost many bits and change few pixels, others the other way round. The
decoder does not care which integers it receives, so the encoder may pick them to lower the
training objective ``bits + lambda * 255^2 * MSE`` of the actual file. This is a greedy
rate-distortion optimised quantisation (RDOQ) in the latent space:

1. Decode the current symbols through the synthesis and take the gradient of the distortion
   with respect to every latent (one backward pass).
2. For every symbol of this pass's positions, estimate the change of the objective if it moved
   by +-1: the exact change of its code length in the coder's table (`symbol_bits`), plus the
   distortion change to second order (gradient * step + curvature * step^2 / 2, with the
   curvature from the energy of the synthesis' response to a unit impulse in that channel).
3. Apply the best few improving moves per latent position, on one of the four 2x2 phases of
   positions per pass. Moving every improving symbol at once fails: the 192 channels at a
   position, and neighbouring positions, all try to fix the same pixel error and overshoot
   (measured on held-out photos: +2..+5% BD-rate instead of a gain). Even one move per
   position, everywhere in a single pass, lowers the PSNR-side rate but raises the MS-SSIM-side
   one (held-out photos: -2.2% / +2.2% BD-rate against effort 0), so every level is phased.

With the checkerboard context only the context-coded half is refined (see `Codec._refine`),
which lives on two of the four phases: one round (effort 1, the default) is a pass on each.
What makes a pass cheap enough for the default (on two cores, a 768x512 pass went from about
0.24 s to 0.13 s): the synthesis runs in bfloat16 where the CPU has it natively (`Codec.
_fast_dtype`; the gradient only ranks moves), the post-filter's correction enters as a
constant instead of being differentiated through (taken on the first pass of each round), and moves are priced by table look-ups at
the pass's positions only, instead of Gaussian CDFs everywhere.

Effort 0 runs no pass at all, but does not round blindly either: `rate_aware_round` moves a
symbol one step towards zero when the bits saved outweigh a per-symbol estimate of the
distortion added (free: a few table look-ups per symbol).

The hyper-latent z, the means and the scale indexes stay as they are, so the file format, the
decoder and the bit-exactness rules are untouched. Images are refined in windows with a margin
as wide as the synthesis' reach, so memory stays bounded on big images.
"""
from __future__ import annotations

import numpy as np
import torch

from .efforts import DEFAULT_EFFORT, EFFORTS, ROUNDS, check_effort  # noqa: F401 (re-exported)
from .model.transforms import BLOCK

MOVES_PER_POSITION = 4                    # symbols changed per latent position and iteration
WINDOW = 96                               # latent positions per refinement window side
MARGIN = 4                                # latents of context around a window (synthesis reach)
BITS_LIMIT = 64                           # |symbol| up to which moves are priced from the tables


@torch.no_grad()
def impulse_energy(synthesis, channels: int, device="cpu") -> torch.Tensor:
    """Squared pixel-norm of the synthesis' response to a unit latent in each channel.

    Measured around zero on a small canvas (the synthesis is close to linear there); the
    curvature of the distortion along one latent is proportional to it.
    """
    size = 2 * MARGIN + 1
    impulses = torch.zeros(channels, channels, size, size, device=device)
    impulses[torch.arange(channels), torch.arange(channels), MARGIN, MARGIN] = 1.0
    base = synthesis(torch.zeros(1, channels, size, size, device=device))
    return ((synthesis(impulses) - base) ** 2).sum(dim=(1, 2, 3)).cpu()


def refine(synthesis, pixels: np.ndarray, symbols: np.ndarray, mean: np.ndarray,
           index: np.ndarray, decoder_gain: np.ndarray, lam: float, rounds: int,
           energy: torch.Tensor, bits: np.ndarray, device="cpu",
           positions: np.ndarray | None = None, in_place: bool = False,
           postfilter=None) -> np.ndarray:
    """Return better symbols for the same means and scale indexes (``symbols`` is not changed,
    unless ``in_place``: then it is refined and returned, sparing a full-size copy).

    ``synthesis``: y_hat -> pixels in [0, 1], differentiable (the synthesis transform);
    ``postfilter``: None, or the decoder's post-filter (synthesis pixels -> shown pixels, no
    gradient needed), whose correction enters every pass as a constant: it is close to the
    identity, differentiating through it would cost as much as the synthesis' backward pass,
    and it is computed once per round of passes (the moves of one round change it little);
    pixels: (H, W, 3) uint8, the original
    image (unpadded); symbols (M, h, w) int64; mean (M, h, w) float64 in the gained domain;
    index (M, h, w) scale indexes; decoder_gain (M, 1, 1); lam: the quality's lambda; energy:
    `impulse_energy` of the synthesis transform (the post-filter, close to the identity, is
    left out of this curvature estimate); bits: `symbol_bits` of the coder's tables (the exact
    price of every symbol); ``device``: where ``synthesis`` lives; ``positions``: (h, w) bool,
    the latent positions that may change (all when None).
    """
    out = symbols if in_place else symbols.copy()
    if rounds <= 0:
        return out
    _, rows, cols = symbols.shape
    table_bits = torch.from_numpy(np.ascontiguousarray(bits, dtype=np.float32)).to(device)
    for r0 in range(0, rows, WINDOW):
        for c0 in range(0, cols, WINDOW):
            core = (slice(r0, min(r0 + WINDOW, rows)), slice(c0, min(c0 + WINDOW, cols)))
            win = (slice(max(r0 - MARGIN, 0), min(r0 + WINDOW + MARGIN, rows)),
                   slice(max(c0 - MARGIN, 0), min(c0 + WINDOW + MARGIN, cols)))
            _refine_window(synthesis, postfilter, pixels, out, mean, index, decoder_gain, lam,
                           rounds, energy, table_bits, core, win, torch.device(device), positions)
    return out


def _refine_window(synthesis, postfilter, pixels, symbols, mean, index, decoder_gain, lam,
                   rounds, energy, table_bits, core, win, device, positions) -> None:
    """Refine ``symbols[:, core]`` in place, judging pixels of the whole window ``win``: ``rounds``
    times one pass per 2x2 phase that holds editable positions."""
    rows, cols = win
    top, left = rows.start * BLOCK, cols.start * BLOCK
    target = pixels[top:rows.stop * BLOCK, left:cols.stop * BLOCK]
    height, width = target.shape[:2]
    if height == 0 or width == 0:
        return
    def tensor(a):
        return torch.from_numpy(np.ascontiguousarray(a)).to(device)

    x = tensor(target).permute(2, 0, 1)[None].float().div_(255)
    q = tensor(symbols[:, rows, cols].astype(np.float32))
    mu = tensor(mean[:, rows, cols].astype(np.float32))
    table = tensor(index[:, rows, cols].astype(np.int64))
    gain = tensor(np.asarray(decoder_gain, dtype=np.float32)).reshape(-1, 1, 1)
    pixel_count = height * width
    weight = lam * 65025.0 / (3 * pixel_count)        # d(objective)/d(squared error sum)
    curvature = 2 * weight * energy.to(device).reshape(-1, 1, 1) * gain ** 2
    editable = torch.zeros(q.shape[1:], dtype=torch.bool, device=device)
    editable[core[0].start - rows.start:core[0].stop - rows.start,
             core[1].start - cols.start:core[1].stop - cols.start] = True
    if positions is not None:
        editable &= tensor(positions[rows, cols])
    # the 2x2 phases (every other row and column) that hold editable positions, in turn
    phases = [(pr, pc) for pr in (0, 1) for pc in (0, 1) if bool(editable[pr::2, pc::2].any())]
    if not phases:
        return
    limit = (table_bits.shape[1] - 1) // 2
    flat = table_bits.reshape(-1)
    correction = None
    for step in range(rounds * len(phases)):
        y_hat = ((q + mu) * gain)[None].requires_grad_(True)
        with torch.enable_grad():
            x_hat = synthesis(y_hat)
            if postfilter is not None:
                if step % len(phases) == 0:     # once per round
                    with torch.no_grad():
                        plain = x_hat.detach().float()
                        correction = postfilter(plain).float() - plain
                x_hat = x_hat.float() + correction
            x_hat = x_hat[:, :, :height, :width]
            distortion = weight * ((x_hat.float() - x) ** 2).sum()
            (grad,) = torch.autograd.grad(distortion, y_hat)
        with torch.no_grad():
            # only this phase's positions can move: judge the moves there alone
            pr, pc = phases[step % len(phases)]
            sub = (slice(None), slice(pr, None, 2), slice(pc, None, 2))
            qs, slope = q[sub], grad[0][sub] * gain          # d(distortion)/d(symbol)
            # symbols with both neighbours inside the priced range may move (the clamp only
            # keeps the look-ups of the others in bounds)
            inside = qs.abs() < limit
            at = table[sub] * table_bits.shape[1] + qs.long().clamp(1 - limit, limit - 1) + limit
            bits_now = flat[at]
            best_move = torch.zeros_like(qs)
            best_gain = torch.zeros_like(qs)
            for move in (-1, 1):
                change = ((flat[at + move] - bits_now) / pixel_count + slope * move + 0.5 * curvature)
                # escapes (inf bits) and out-of-table symbols never move
                change = torch.where(inside & torch.isfinite(change), change, torch.zeros_like(change))
                better = change < best_gain
                best_move = torch.where(better, torch.full_like(qs, float(move)), best_move)
                best_gain = torch.where(better, change, best_gain)
            chosen = torch.zeros_like(qs, dtype=torch.bool)
            k = min(MOVES_PER_POSITION, q.shape[0])
            chosen.scatter_(0, best_gain.topk(k, dim=0, largest=False).indices, True)
            apply = chosen & (best_move != 0) & editable[sub[1:]][None]
            q[sub] += best_move * apply
    symbols[:, core[0], core[1]] = q[:, core[0].start - rows.start:core[0].stop - rows.start,
                                     core[1].start - cols.start:core[1].stop - cols.start
                                     ].cpu().numpy().astype(np.int64)


def symbol_bits(tables, limit: int = BITS_LIMIT) -> np.ndarray:
    """(tables, 2 * limit + 1): ideal code length (bits) of each symbol ``-limit..limit`` under
    each scale table (column ``limit + v`` for symbol v); ``inf`` where a symbol needs the
    escape (the refinement never moves a symbol there)."""
    bits = np.full((len(tables), 2 * limit + 1), np.inf)
    for s, table in enumerate(tables):
        direct = table.freqs[:-1].astype(np.float64)
        total = float(direct.sum() + table.freqs[-1])
        values = np.arange(len(direct)) + table.offset          # the symbol of each entry
        keep = (np.abs(values) <= limit) & (direct > 0)
        bits[s, values[keep] + limit] = -np.log2(direct[keep] / total)
    return bits


# -- effort 0: rate-aware rounding, no pass through the decoder ---------------------------------
def magnitude_bits(tables, limit: int = BITS_LIMIT) -> np.ndarray:
    """Ideal code length (bits) of a residual of magnitude ``0..limit`` under each scale table,
    read on the positive side (the zero-mean tables are symmetric up to the rounding of one
    entry in the widest ones); ``inf`` where a magnitude needs the escape (`rate_aware_round`
    leaves those symbols alone)."""
    return symbol_bits(tables, limit)[:, limit:]


def rate_aware_round(value: np.ndarray, index: np.ndarray, bits: np.ndarray,
                     cost: np.ndarray) -> np.ndarray:
    """``round(value)``, except that a symbol moves one step towards zero when the bits it
    saves outweigh the distortion it adds.

    value (M, h, w): the residual ``y - mean`` before rounding (gained domain); index (M, h, w):
    scale indexes; bits: `magnitude_bits`; cost (M, 1, 1) float64: the objective's price, in bits, of a
    squared step of one symbol in each channel (``lambda * 255^2 / 3`` times the channel's
    pixel energy per unit symbol; see `rounding_cost`). Moving q to q - sign(q) changes the
    squared quantisation error (q - v)^2 by exactly ``1 - 2 sign(q) (q - v)``: the diagonal
    (per-symbol, no interaction) estimate that the greedy `refine` replaces with real
    gradients at higher efforts.
    """
    q = np.ascontiguousarray(np.round(value))
    flat = q.reshape(-1)                       # a view of the contiguous q
    # only nonzero symbols can move (most are 0); non-finite values are left to the caller
    nonzero = np.flatnonzero((flat != 0) & np.isfinite(flat))
    if nonzero.size:
        current = flat[nonzero]
        magnitude = np.abs(current)
        limit = bits.shape[1] - 1
        where = np.unravel_index(nonzero, q.shape)   # (channel, row, column): no full copies
        table = index[where].astype(np.intp)
        clipped = np.minimum(magnitude, limit).astype(np.intp)
        now = bits[table, clipped]
        # symbols beyond ``bits`` or coded through the escape keep their value
        movable = (magnitude <= limit) & np.isfinite(now)
        with np.errstate(invalid="ignore"):   # inf - inf where not movable: masked out
            saved = now - bits[table, clipped - 1]
        sign = np.sign(current)
        added = cost.reshape(-1)[where[0]] * (1.0 - 2.0 * sign * (current - value[where]))
        move = movable & (saved > added)
        flat[nonzero[move]] -= sign[move]
    return q.astype(np.int64)


def rounding_cost(energy: torch.Tensor, decoder_gain: np.ndarray, lam: float,
                  strength: float = 1.0) -> np.ndarray:
    """(M, 1, 1) float64: bits-equivalent price of a unit squared step of one symbol per channel
    (see `rate_aware_round`); ``strength`` scales it (1: the objective the model trained on)."""
    energy = energy.double().numpy().reshape(-1, 1, 1)
    return strength * lam * 65025.0 / 3.0 * energy * np.asarray(decoder_gain, np.float64) ** 2
