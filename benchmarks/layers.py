"""Which upsampling layer and memory layout decode fastest on this CPU?

``python benchmarks/layers.py [--threads 2] [--repeat 20]``

Times, for a 768x512 image (latent 192 x 64 x 96), the synthesis' last layer written as
ConvTranspose2d (16x16 kernel, stride 8) against the sub-pixel form (3x3 conv to 3*8*8
channels + PixelShuffle(8)) that vaez uses, and the residual blocks in the default
(contiguous, NCHW) against the channels_last memory format. Median of --repeat runs.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from torch import nn


def median_seconds(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print("command:", " ".join([sys.executable.split("/")[-1]] + sys.argv))
    m, h, w = 192, 64, 96
    y = torch.randn(1, m, h, w)
    transpose = nn.ConvTranspose2d(m, 3, 16, stride=8, padding=4).eval()
    subpixel = nn.Sequential(nn.Conv2d(m, 3 * 64, 3, padding=1), nn.PixelShuffle(8)).eval()
    block = nn.Sequential(nn.Conv2d(m, 128, 3, padding=1), nn.ReLU(), nn.Conv2d(128, m, 1)).eval()
    block_cl = nn.Sequential(nn.Conv2d(m, 128, 3, padding=1), nn.ReLU(), nn.Conv2d(128, m, 1)).eval()
    block_cl = block_cl.to(memory_format=torch.channels_last)
    y_cl = y.contiguous(memory_format=torch.channels_last)
    rows = []
    with torch.inference_mode():
        rows.append(("ConvTranspose2d 16x16/8 -> 768x512x3", median_seconds(lambda: transpose(y), args.repeat)))
        rows.append(("Conv2d 3x3 + PixelShuffle(8)", median_seconds(lambda: subpixel(y), args.repeat)))
        rows.append(("residual block, NCHW", median_seconds(lambda: block(y), args.repeat)))
        rows.append(("residual block, channels_last", median_seconds(lambda: block_cl(y_cl), args.repeat)))
    print(f"threads={args.threads}")
    print("| layer | median ms |\n|---|---:|")
    for name, sec in rows:
        print(f"| {name} | {sec * 1000:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
