"""The effort-0 encoder's rate-aware rounding: how strongly to price distortion.

``python benchmarks/rounding.py DIR --validation-split [--strengths 0 3 6 9 14] [--qualities ...]``

`neuralcodec.refine.rate_aware_round` moves a symbol one step towards zero when the bits it
saves outweigh a per-symbol estimate of the distortion it adds, scaled by a strength
(`Codec.rounding_strength`; 0 is plain rounding). This sweeps the strength on a folder (use
``--validation-split`` on the training folder: the shipped value is chosen there, never on
Kodak) and prints, per strength, the mean bpp / PSNR per quality and the BD-rate (PSNR and
MS-SSIM dB) against the first strength given.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import finish_report, set_threads, start_command  # noqa: E402

DEFAULT_STRENGTHS = [0.0, 3.0, 6.0, 9.0, 14.0]
QUALITIES = [1, 16, 35, 55, 75, 95]


def make_parser(prog: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    ap.add_argument("directory", type=Path)
    ap.add_argument("--strengths", type=float, nargs="+", default=DEFAULT_STRENGTHS,
                    help="strengths to measure; BD-rates are against the first")
    ap.add_argument("--qualities", type=float, nargs="+", default=QUALITIES)
    ap.add_argument("--validation-split", action="store_true",
                    help="only the held-out validation images of a training folder")
    ap.add_argument("--limit", type=int, help="use only the first N images")
    ap.add_argument("--threads", type=int, help="torch threads")
    ap.add_argument("--json", type=Path, help="also write the results here")
    return ap


def report(results: dict) -> str:
    lines = [f"$ {results['command']}", "", f"{results['images']} images; quality: "
             + " / ".join(f"{q:g}" for q in results["qualities"]), "",
             "| strength | bpp per quality | PSNR (dB) per quality | BD-rate PSNR | BD-rate MS-SSIM |",
             "|---|---|---|---|---|"]
    for row in results["rows"]:
        bd = row.get("bd") or {}

        def cell(metric):
            value = (bd.get(metric) or {}).get("bd_rate")
            return "—" if value is None else f"{value:+.2f}%"
        lines.append(f"| {row['strength']:g} | " + " / ".join(f"{b:.4f}" for b in row["bpp"])
                     + " | " + " / ".join(f"{p:.2f}" for p in row["psnr"])
                     + f" | {cell('psnr')} | {cell('ms_ssim')} |")
    lines.append("")
    lines.append(f"BD-rates against strength {results['rows'][0]['strength']:g} "
                 "(negative: fewer bits at equal quality).")
    return "\n".join(lines) + "\n"


def main(argv=None, prog=None) -> int:
    args, command = start_command(make_parser, argv, prog, "benchmarks.rounding")
    set_threads(args.threads)
    from benchmarks import rd
    from neuralcodec.codec import default_codec

    paths = rd.validation_split(args.directory)[0] if args.validation_split else None
    images = rd.load_images(args.directory, args.limit, paths=paths)
    codec = default_codec()
    saved = codec.rounding_strength
    rows, first = [], None
    try:
        for strength in args.strengths:
            codec.rounding_strength = strength
            per_image = rd.measure(f"strength {strength:g}",
                                   lambda im, q: codec.compress(im, quality=q, effort=0),
                                   codec.decompress, images, args.qualities, progress=False)
            record = {"points": rd.summarize(per_image)}
            row = {"strength": strength, "bpp": [p["bpp"] for p in record["points"]],
                   "psnr": [p["psnr"] for p in record["points"]]}
            if first is None:
                first = record
            else:
                row["bd"] = {m: rd._bd(first, record, m) for m in ("psnr", "ms_ssim")}
            rows.append(row)
    finally:
        codec.rounding_strength = saved
    results = {"command": command, "images": len(images), "qualities": args.qualities, "rows": rows}
    return finish_report(results, report, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
