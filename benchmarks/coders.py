"""Huffman fallback against constriction on real images: file sizes and identical output.

``python benchmarks/coders.py DIR [--qualities 1 25 50 75 100] [--limit N]``

Compresses every image in DIR with both coders at each quality, checks that both files decode
to identical pixels, and prints the mean file-size ratio huffman/constriction per quality and
overall (whole files, headers included). The 1.0 target is "within 5%".
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import start_command  # noqa: E402


def make_parser(prog: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--qualities", type=float, nargs="+", default=[1, 25, 50, 75, 100])
    ap.add_argument("--limit", type=int, default=0)
    return ap


def main(argv=None) -> int:
    args, _ = start_command(make_parser, argv, None, "benchmarks.coders")
    from PIL import Image

    from neuralcodec.codec import Codec

    codec = Codec()
    paths = sorted(p for p in args.dir.iterdir() if p.suffix.lower() in (".png", ".webp", ".jpg"))
    if args.limit:
        paths = paths[:args.limit]
    print("| quality | constriction bytes | huffman bytes | ratio | huffman dec s | constriction dec s |")
    print("|---:|---:|---:|---:|---:|---:|")
    total_c = total_h = 0
    for q in args.qualities:
        size_c = size_h = 0
        t_c = t_h = 0.0
        for path in paths:
            image = Image.open(path)
            a = codec.compress(image, quality=q, coder="constriction")
            b = codec.compress(image, quality=q, coder="huffman")
            t = time.perf_counter()
            pa = np.asarray(codec.decompress(a))
            t_c += time.perf_counter() - t
            t = time.perf_counter()
            pb = np.asarray(codec.decompress(b))
            t_h += time.perf_counter() - t
            if not np.array_equal(pa, pb):
                print(f"MISMATCH: {path.name} at quality {q:g} decodes differently", file=sys.stderr)
                return 1
            size_c += len(a)
            size_h += len(b)
        total_c += size_c
        total_h += size_h
        n = len(paths)
        print(f"| {q:g} | {size_c / n:.0f} | {size_h / n:.0f} | {size_h / size_c:.4f} | "
              f"{t_h / n:.3f} | {t_c / n:.3f} |")
    print(f"\nall qualities: huffman/constriction = {total_h / total_c:.4f} over {len(paths)} images; "
          "both coders decoded to identical pixels everywhere")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
