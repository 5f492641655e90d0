"""Train the channel slices (`model/slices.py`) on the shipped model's frozen latents.

``python -m neuralcodec.train_slices ../shared/data/train --out runs/slices/slices.pt``

Everything but the slices stays as it is, so this needs no GPU: random 256x256 crops of the
training split (never the validation split) are compressed by the installed codec at random
qualities (effort 0) and decoded again, which gives every latent's symbol, scale index and
residual before rounding exactly as the codec codes them. The slices then learn, on the rate
alone (a uniform-noise stand-in for rounding), how much to widen or narrow each scale given the
earlier slices' symbols. A hash-chosen part of the training photos is kept apart and measured
with real rounding and the 64-entry table at the end. The result is a small checkpoint that
`neuralcodec.export --slices` adds to a weights file.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .model.constants import LOG_STEP, SCALE_COUNT, SCALE_MIN
from .model.slices import DEFAULT_BOUNDS, ChannelSlices

CROP = 256
WINDOW = 24        # latent rows/columns of a training window (even offsets keep the checkerboard)


def held_out(path: Path, fraction: float) -> bool:
    """The photos this recipe measures on: a hash of the name, salted apart from the
    validation split's (`train.is_validation`), so the two choices are independent."""
    digest = hashlib.sha1(b"channel-context:" + path.name.encode()).digest()
    return int.from_bytes(digest[:4], "little") / 2**32 < fraction


def code_length(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Bits of each value's unit bin under the zero-mean Gaussian at (continuous) scale index."""
    scale = SCALE_MIN * torch.exp(index.clamp(0, SCALE_COUNT - 1) * LOG_STEP)
    magnitude = values.abs()     # the lower tail keeps far bins accurate
    mass = torch.special.ndtr((0.5 - magnitude) / scale) - torch.special.ndtr((-0.5 - magnitude) / scale)
    return -torch.log2(mass.clamp_min(1e-9))


def coded_crops(root: Path, want: dict, eval_fraction: float, seed: int, codec=None):
    """Random 256x256 crops of the training split (never the validation split), each coded by
    ``codec`` (default: the installed one) without its slices at a random quality, effort 0.
    Yields ``(side, crop, codec, decode_latents(file))`` with side "train" or "eval"
    (`held_out`) until ``want[side]`` crops of each side came (two per photo)."""
    import dataclasses

    from PIL import Image

    from .codec import Codec, default_codec
    from .train import is_validation, list_images

    codec = codec or default_codec()
    if codec.slices is not None:
        # the tables before any slice: the same weights without theirs (files written this way
        # stay in this function: they would not decode with the real weights)
        codec = Codec(dataclasses.replace(codec.weights, slices=None))
    paths = [p for p in list_images(root) if not is_validation(p, 0.05)]
    rng = random.Random(seed)
    rng.shuffle(paths)
    counts = {"train": 0, "eval": 0}
    for path in paths:
        side = "eval" if held_out(path, eval_fraction) else "train"
        if counts[side] >= want[side]:
            if all(counts[k] >= want[k] for k in counts):
                break
            continue
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
        h, w = rgb.shape[:2]
        if h < CROP or w < CROP:
            continue
        for _ in range(2):
            y0, x0 = rng.randrange(h - CROP + 1), rng.randrange(w - CROP + 1)
            crop = np.ascontiguousarray(rgb[y0:y0 + CROP, x0:x0 + CROP])
            data = codec.compress(crop, quality=rng.uniform(1, 100), effort=0)
            counts[side] += 1
            yield side, crop, codec, codec.decode_latents(data)


def collect(root: Path, crops: int, eval_crops: int, eval_fraction: float, seed: int, codec=None) -> dict:
    """``{"train" | "eval": (planes, qualities)}``; planes (N, 3, M, 32, 32) float32: the
    symbols, the residuals before rounding and the scale indexes the codec codes them with."""
    sets = {"train": [], "eval": []}
    for side, crop, codec, (header, _, _, symbols, mean, index) in coded_crops(
            root, {"train": crops, "eval": eval_crops}, eval_fraction, seed, codec):
        with torch.inference_mode():
            y_value = codec._analysis(crop, 0).astype(np.float64) * codec._gain(header.quality, decoder=False)
        sets[side].append((np.stack([symbols, y_value - mean, index]).astype(np.float32), header.quality))
    if not sets["train"]:
        raise ValueError(f"no training photos of at least {CROP}x{CROP} in {root}")
    return {side: (torch.tensor(np.stack([a for a, _ in items])) if items
                   else torch.zeros((0, 3) + sets["train"][0][0].shape[1:]),
                   np.array([q for _, q in items]))
            for side, items in sets.items()}


def anchor_plane(height: int, width: int) -> torch.Tensor:
    """(1, 1, H, W): 1 where row + column is even (the checkerboard's anchors)."""
    return ((torch.arange(height)[:, None] + torch.arange(width)[None, :]) % 2 == 0).float()[None, None]


def channel_order(planes: torch.Tensor) -> torch.Tensor:
    """Channels by their average cost under the shipped tables, most expensive first."""
    with torch.no_grad():
        bits = code_length(planes[:, 0], planes[:, 2]).mean(dim=(0, 2, 3))
    return torch.argsort(bits, descending=True)


def train(slices: ChannelSlices, planes: torch.Tensor, steps: int, seed: int, lr: float = 1e-3,
          log=print) -> None:
    """Rate-only training on random latent windows, cosine learning rate from ``lr``."""
    opt = torch.optim.Adam(slices.parameters(), lr)
    gen = torch.Generator().manual_seed(seed)
    side = planes.shape[-1]
    anchors = anchor_plane(WINDOW, WINDOW)
    start = time.time()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        pick = torch.randint(0, len(planes), (16,), generator=gen)
        y0, x0 = (2 * torch.randint(0, (side - WINDOW) // 2 + 1, (2,), generator=gen)).tolist()
        window = planes[pick, :, :, y0:y0 + WINDOW, x0:x0 + WINDOW]
        symbols, residual, index = window[:, 0], window[:, 1], window[:, 2]
        correction = slices(symbols, index, anchors)
        noisy = residual + torch.rand(residual.shape, generator=gen) - 0.5
        loss = code_length(noisy, index + correction).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 500 == 0 or step == steps - 1:
            log(f"step {step}: {loss.item():.2f} bits per latent position ({time.time() - start:.0f} s)")


def measure(slices: ChannelSlices, planes: torch.Tensor) -> tuple[float, float]:
    """(bits with the shipped tables, bits with the slices' rounded indexes) of the real symbols."""
    with torch.no_grad():
        symbols, index = planes[:, 0], planes[:, 2]
        before = code_length(symbols, index).sum().item()
        corrected = torch.round(index + slices(symbols, index, anchor_plane(*index.shape[-2:])))
        after = code_length(symbols, corrected.clamp(0, SCALE_COUNT - 1)).sum().item()
    return before, after


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m neuralcodec.train_slices", description=__doc__.split("\n")[0])
    ap.add_argument("train_dir", type=Path)
    ap.add_argument("--out", type=Path, required=True, help="checkpoint to write (.pt)")
    ap.add_argument("--bounds", default=",".join(map(str, DEFAULT_BOUNDS)),
                    help="where slices 1.. start in the channel order (default %(default)s)")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--crops", type=int, default=600, help="training crops (default 600)")
    ap.add_argument("--eval-crops", type=int, default=64)
    ap.add_argument("--eval-fraction", type=float, default=0.04)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    started = time.time()
    data = collect(args.train_dir, args.crops, args.eval_crops, args.eval_fraction, args.seed)
    train_planes, _ = data["train"]
    eval_planes, eval_quality = data["eval"]
    print(f"latents: {len(train_planes)} training crops, {len(eval_planes)} held-out crops "
          f"({time.time() - started:.0f} s)", flush=True)
    order = channel_order(train_planes)
    slices = ChannelSlices(order, [int(b) for b in args.bounds.split(",")], args.hidden)
    train(slices, train_planes, args.steps, args.seed, log=lambda s: print(s, flush=True))
    results = {}
    for low, high in ((1, 34), (34, 67), (67, 100.01), (1, 100.01)):
        pick = torch.tensor((eval_quality >= low) & (eval_quality < high), dtype=torch.bool)
        if not pick.any():
            continue
        before, after = measure(slices, eval_planes[pick])
        results[f"{low}-{min(high, 100):.0f}"] = {"crops": int(pick.sum()), "bits_before": round(before),
                                                 "bits_after": round(after),
                                                 "change_percent": round(100 * (after - before) / before, 2)}
    print(json.dumps(results, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"order": slices.order, "bounds": slices.bounds, "hidden": args.hidden,
                "state": slices.state_dict(), "held_out": results,
                "recipe": {k: str(v) for k, v in vars(args).items()},
                "minutes": round((time.time() - started) / 60, 1)}, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
