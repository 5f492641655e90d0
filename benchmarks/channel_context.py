"""Experiment: what would channel-conditional slices save on top of the shipped entropy model?

The rate-distortion issue names channel-conditional entropy models (Minnen & Singh 2020; ELIC's
uneven groups) as a lever. Building one into the codec touches the file format, the integer
export, the encoder's refinement and the tiled decoder, so this script first measures the
most such a model could save *with the shipped transforms frozen*, before anyone builds it:

1. Latents: random 256x256 crops of the training split (never the validation split), each
   compressed at a random quality (effort 0) and entropy-decoded again, which gives for every
   latent its integer scale index and mean as the shipped model (hyperprior + checkerboard
   context) codes it, and the continuous residual ``y - mean`` before rounding. A hash-chosen
   part of the training photos (``--eval-fraction``) is kept apart to measure on.
2. Channels are ordered by their average bits (a few channels carry most of them) and cut into
   slices at ``--slices``. For every slice after the first, a small network (a 3x3 convolution
   over the symbols and magnitudes of all earlier slices, then two 1x1 layers that also see
   the slice's own scale coordinate) predicts a correction to its mean and scale coordinate,
   as a decoder could do once the earlier slices are decoded. Trained on the rate alone (the
   usual uniform-noise stand-in for rounding); the distortion is the same either way, since
   every residual is still rounded to the nearest integer.
3. Measured on the held-out crops with real rounding and the 64-entry scale table: bits of all
   latents (ideal code lengths) before and after, overall and by quality range.

Run: ``python benchmarks/channel_context.py ../shared/data/train`` (about 8 minutes on two
cores). Results and their reading: ``neuralcodec/MODEL.md`` ("Next levers").
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import neuralcodec  # noqa: E402,F401  (before NumPy: sets the BLAS thread policy)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from neuralcodec.model.integer_hyper import ACT_BITS, quality_offset  # noqa: E402
from neuralcodec.train_slices import anchor_plane, code_length, coded_crops  # noqa: E402


def collect(root: Path, crops: int, eval_fraction: float, seed: int) -> dict:
    """Per crop: residuals before rounding and scale indexes under the shipped tables
    (without slices) and under the hyperprior alone, and the quality."""
    sets = {"train": [], "eval": []}
    want = {"train": crops, "eval": max(crops // 8, 24)}
    for side, crop, codec, (header, _, z_symbols, _, mean, index) in coded_crops(
            root, want, eval_fraction, seed):
        gain = codec._gain(header.quality, decoder=False)
        offset = quality_offset(codec.weights.gain_offsets, int(round(header.quality * 100)))
        hyper_mean = np.empty(index.shape)
        hyper_coord = np.empty(index.shape)

        def band(rows, cols, mean_unit, coordinate):   # the hyperprior alone (no context)
            hyper_mean[:, rows, cols] = mean_unit * gain
            hyper_coord[:, rows, cols] = (coordinate + offset[:, None, None]) / (1 << ACT_BITS)

        codec._each_hyper_band(z_symbols, 0, band)
        with torch.inference_mode():
            y_value = codec._analysis(crop, 0).astype(np.float64) * gain
        sets[side].append((np.stack([y_value - mean, index, y_value - hyper_mean, hyper_coord]),
                           header.quality))
    return {side: (torch.tensor(np.stack([a for a, _ in items]), dtype=torch.float32),
                   np.array([q for _, q in items]))
            for side, items in sets.items()}


class SliceContext(nn.Module):
    """Mean and scale-coordinate corrections, slice by slice.

    ``add``: slices 1.. on top of the shipped model's tables (hyperprior + checkerboard), in
    the shipped decoding order: the anchors of every slice in turn, then the checkerboard
    context, then the other half slice by slice. So an anchor sees the earlier slices' anchors
    (its own position and the diagonal ones in a 3x3 window), the other half sees every
    position of the earlier slices. ``replace``: instead of the shipped
    checkerboard, on the hyperprior's tables, every slice (the first too) is decoded in two
    checkerboard halves: its anchors see the earlier slices, its other half also its own
    anchors (ELIC's layout)."""

    def __init__(self, bounds: list[int], channels: int, hidden: int, design: str, kernel: int = 3):
        super().__init__()
        self.design = design
        starts = bounds if design == "add" else [0] + bounds
        self.edges = list(zip(starts, starts[1:] + [channels]))
        self.parts = nn.ModuleList()
        for before, end in self.edges:
            width = end - before
            part = nn.ModuleDict({
                "mix": nn.Conv2d(hidden * (before > 0) + hidden * (design == "replace") + width, hidden, 1),
                "head": nn.Conv2d(hidden, 2 * width, 1),
            })
            if before:
                part["earlier"] = nn.Conv2d(2 * before, hidden, kernel, padding=kernel // 2)
                if design == "add":   # anchors first, so an anchor sees only earlier anchors
                    part["earlier_anchor"] = nn.Conv2d(2 * before, hidden, kernel, padding=kernel // 2)
            if design == "replace":
                part["own"] = nn.Conv2d(2 * width, hidden, 3, padding=1)
            nn.init.zeros_(part["head"].weight)   # starts as the tables it corrects
            nn.init.zeros_(part["head"].bias)
            self.parts.append(part)

    def forward(self, symbols: torch.Tensor, coordinate: torch.Tensor):
        """``symbols``: the decoded integers (rounded residuals); ``coordinate``: the scale
        coordinate being corrected. Returns corrections for channels ``edges[0][0]:``."""
        mask = anchor_plane(*symbols.shape[-2:])
        means, coords = [], []
        for (before, end), part in zip(self.edges, self.parts):
            inputs = []
            if before:
                seen = symbols[:, :before]
                features = F.relu(part["earlier"](torch.cat([seen, seen.abs()], 1)))
                if "earlier_anchor" in part:
                    seen = seen * mask
                    anchor_features = F.relu(part["earlier_anchor"](torch.cat([seen, seen.abs()], 1)))
                    features = features * (1 - mask) + anchor_features * mask
                inputs.append(features)
            if "own" in part:   # own anchors, used only on the other half (anchors see none)
                own = symbols[:, before:end] * mask
                inputs.append(F.relu(part["own"](torch.cat([own, own.abs()], 1))) * (1 - mask))
            inputs.append(coordinate[:, before:end] / 16)
            d_mean, d_coord = part["head"](F.relu(part["mix"](torch.cat(inputs, 1)))).chunk(2, 1)
            means.append(d_mean)
            coords.append(d_coord)
        return torch.cat(means, 1), torch.cat(coords, 1)


def train(net: SliceContext, base, proxy, steps: int, seed: int, scale_only: bool) -> None:
    """Rate-only training on 24x24 latent windows (even offsets keep the checkerboard)."""
    residual, coordinate = base
    first = net.edges[0][0]
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    gen = torch.Generator().manual_seed(seed)
    side = residual.shape[-1]
    for step in range(steps):
        for group in opt.param_groups:   # cosine from 1e-3
            group["lr"] = 1e-5 + 1e-3 * 0.5 * (1 + math.cos(math.pi * step / steps))
        pick = torch.randint(0, len(residual), (16,), generator=gen)
        y0, x0 = (2 * torch.randint(0, (side - 24) // 2 + 1, (2,), generator=gen)).tolist()
        window = (pick, slice(None), slice(y0, y0 + 24), slice(x0, x0 + 24))
        r, t = residual[window], coordinate[window]
        d_mean, d_coord = net(proxy[window], t)
        if scale_only:
            d_mean = torch.zeros_like(d_mean)
        noisy = r[:, first:] - d_mean + torch.rand(d_mean.shape, generator=gen) - 0.5
        loss = code_length(noisy, t[:, first:] + d_coord).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("train_dir", type=Path)
    ap.add_argument("--design", choices=("add", "replace"), default="add",
                    help="add: slices 1.. on top of the shipped tables; replace: every slice in "
                         "checkerboard halves instead of the shipped context (default add)")
    ap.add_argument("--slices", default="8,16,32,64",
                    help="channel counts where slices 1.. start, in order of bits (default 8,16,32,64)")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--kernel", type=int, choices=(1, 3), default=3,
                    help="window over the earlier slices (default 3)")
    ap.add_argument("--scale-only", action="store_true",
                    help="correct the scale coordinate only, never the mean (so a slice's "
                         "symbols do not depend on the earlier slices)")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--crops", type=int, default=500, help="training crops (default 500)")
    ap.add_argument("--eval-fraction", type=float, default=0.04)
    ap.add_argument("--cache", type=Path, help="keep the collected latents in this .pt file")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    bounds = [int(v) for v in args.slices.split(",")]
    start = time.time()
    if args.cache and args.cache.exists():
        data = torch.load(args.cache, weights_only=False)
    else:
        data = collect(args.train_dir, args.crops, args.eval_fraction, args.seed)
        if args.cache:
            torch.save(data, args.cache)
    train_set, _ = data["train"]
    eval_set, eval_q = data["eval"]
    channels = train_set.shape[2]
    if not (0 < bounds[0] and all(a < b for a, b in zip(bounds, bounds[1:] + [channels]))):
        ap.error(f"--slices must increase and stay below the channel count ({channels})")
    print(f"latents: {len(train_set)} training crops, {len(eval_set)} held-out crops "
          f"({time.time() - start:.0f} s)", flush=True)
    with torch.no_grad():   # channel order: most bits first, under the shipped tables
        bits = code_length(torch.round(train_set[:, 0]), train_set[:, 1]).mean(dim=(0, 2, 3))
        order = torch.argsort(bits, descending=True)
    train_set, eval_set = train_set[:, :, order], eval_set[:, :, order]
    # what is corrected: the shipped tables (add) or the hyperprior's alone (replace); the
    # symbols the slices see are the rounded residuals of those (a stand-in for replace,
    # whose decoder would see symbols around its own corrected means)
    use = (0, 1) if args.design == "add" else (2, 3)
    net = SliceContext(bounds, channels, args.hidden, args.design, args.kernel)
    train(net, (train_set[:, use[0]], train_set[:, use[1]]), torch.round(train_set[:, use[0]]),
          args.steps, args.seed, args.scale_only)
    print(f"trained {args.steps} steps ({time.time() - start:.0f} s)", flush=True)
    first = net.edges[0][0]
    with torch.no_grad():
        shipped = code_length(torch.round(eval_set[:, 0]), eval_set[:, 1])
        hyper_only = code_length(torch.round(eval_set[:, 2]), torch.round(eval_set[:, 3]))
        residual, coordinate = eval_set[:, use[0]], eval_set[:, use[1]]
        d_mean, d_coord = net(torch.round(residual), coordinate)
        if args.scale_only:
            d_mean.zero_()
        after = code_length(torch.round(residual), torch.round(coordinate))
        after[:, first:] = code_length(torch.round(residual[:, first:] - d_mean),
                                       torch.round(coordinate[:, first:] + d_coord))
    share = shipped.sum(dim=(0, 2, 3)).cumsum(0) / shipped.sum()
    print(f"\ndesign {args.design}: slices start at channels {[0] + bounds} (of {channels}, "
          f"ordered by bits; the first holds {100 * share[bounds[0] - 1]:.1f}%), "
          f"hidden {args.hidden}, {args.kernel}x{args.kernel} over earlier slices, {args.steps} steps{', scale only' if args.scale_only else ''}")
    print("| held-out crops | qualities | hyperprior alone | shipped (+ checkerboard) | with slices | change |")
    print("|---|---|---:|---:|---:|---:|")
    for low, high in ((1, 34), (34, 67), (67, 100.01), (1, 100.01)):
        pick = torch.tensor((eval_q >= low) & (eval_q < high), dtype=torch.bool)
        h, b, a = (x[pick].sum().item() for x in (hyper_only, shipped, after))
        change = f"{100 * (a - b) / b:+.2f}%" if b else "—"
        print(f"| {int(pick.sum())} | {low}-{min(high, 100):.0f} | {h:,.0f} | {b:,.0f} | {a:,.0f} | "
              f"{change} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
