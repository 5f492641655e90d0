"""Big-image benchmark: peak memory of a 6000x4000 photo, and what tiling costs in quality.

    python benchmarks/bigimage.py [KODAK_IMAGE] [--big IMAGE] [--width 6000] [--height 4000]
        [--quality 75] [--tiles 1024 256] [--threads N] [--coder auto] [--json FILE]

Two measurements:

* **Peak memory.** A big image (``--big``, or a synthetic ``--width`` x ``--height`` one from
  `benchmarks.speed.synthetic_image`) is compressed in one fresh Python process and the file
  decompressed in another, with the codec's default (automatic) tiling. Each process reports
  its peak resident set size (``getrusage(RUSAGE_SELF).ru_maxrss``: whole process, torch and
  the weights included) after every codec stage (``load``, ``analysis``, ``hyper``,
  ``entropy``, ``synthesis``, ...), so the stage that sets the peak is visible, and the
  baseline right after the model is loaded. The limit the project asks for is 3 GiB.
* **Tiling quality.** On a ~2-megapixel image (1728x1152: ``KODAK_IMAGE`` upscaled with
  Lanczos, or synthetic) the same image is coded untiled and with each ``--tiles`` core size
  (tiled encode and tiled decode). Reported: PSNR difference (the project asks for <= 0.05
  dB), latent symbols that differ, the largest pixel difference to the untiled decode, and the
  worst tile-seam row/column: its MSE against the original next to the untiled decode's MSE
  on the same line and the mean MSE of the non-seam lines.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import neuralcodec  # noqa: E402,F401  (before NumPy: its thread-pool settings, see THREAD_SETTINGS)
import numpy as np
from PIL import Image, ImageOps

from benchmarks.common import finish_report, set_threads, start_command
from benchmarks.metrics import psnr
from benchmarks.speed import synthetic_image

__all__ = ["measure_peak", "seam_errors", "compare_tiling", "report", "main"]

REPO_ROOT = Path(__file__).resolve().parent.parent
LIMIT_MIB = 3 * 1024
MID_SIZE = (1728, 1152)     # ~2 megapixels

# Linux carries the peak RSS of the process that calls exec() over into the new program
# (and Python's subprocess uses vfork, so that process is this big one). A small launcher
# process in between makes the child's ru_maxrss its own; "start_mib" shows what it started at.
_LAUNCHER = "import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:]).returncode)"

_CHILD = r"""
import json, resource, sys, time

def peak_mib():
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / (1024 * 1024 if sys.platform == "darwin" else 1024)   # bytes on macOS

start_mib = peak_mib()
mode, source, target, quality, threads, coder = sys.argv[1:7]
import torch
if int(threads):
    torch.set_num_threads(int(threads))
from neuralcodec.codec import Codec

codec = Codec()
stages = []
_stage = Codec._stage

def stage(self, name, start):
    now = _stage(self, name, start)
    stages.append({"stage": name, "seconds": now - start, "peak_mib": peak_mib()})
    return now

Codec._stage = stage
out = {"start_mib": start_mib, "baseline_mib": peak_mib()}
t = time.perf_counter()
if mode == "compress":
    data = codec.compress(source, quality=float(quality), coder=coder)
    out["seconds"] = time.perf_counter() - t
    out["peak_mib"] = peak_mib()
    open(target, "wb").write(data)
    out["bytes"] = len(data)
else:
    with open(source, "rb") as f:
        data = f.read()
    image = codec.decompress(data)
    out["seconds"] = time.perf_counter() - t
    out["peak_mib"] = peak_mib()
    image.save(target, compress_level=1)     # after the measurement: for the PSNR check only
out["stages"] = stages
print(json.dumps(out))
"""


def _child(mode: str, source: Path, target: Path, quality: float, threads: int | None,
           coder: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.run([sys.executable, "-c", _LAUNCHER, sys.executable, "-c", _CHILD, mode, str(source), str(target),
                           str(quality), str(threads or 0), coder],
                          capture_output=True, text=True, env=env, cwd=str(REPO_ROOT))
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"{mode} failed (exit {proc.returncode}): {last}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_peak(image: Image.Image, quality: float = 75, threads: int | None = None,
                 coder: str = "auto") -> dict:
    """Peak RSS (MiB) of compress and of decompress, each in a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        source, packed, decoded = Path(tmp) / "big.png", Path(tmp) / "big.vaez", Path(tmp) / "back.png"
        image.save(source, compress_level=1)
        result = {"width": image.size[0], "height": image.size[1],
                  "compress": _child("compress", source, packed, quality, threads, coder)}
        if "error" not in result["compress"]:
            result["bpp"] = 8 * result["compress"]["bytes"] / (image.size[0] * image.size[1])
            result["decompress"] = _child("decompress", packed, decoded, quality, threads, coder)
            if "error" not in result["decompress"]:
                with Image.open(decoded) as back:
                    result["psnr"] = psnr(np.asarray(image), np.asarray(back.convert("RGB")))
    return result


def _seams(length: int, tile: int) -> list[int]:
    return sorted({i for k in range(tile, length, tile) for i in (k - 1, k)})


def seam_errors(original: np.ndarray, tiled: np.ndarray, untiled: np.ndarray, tile: int) -> dict:
    """Worst seam row/column of ``tiled``: its MSE, the untiled MSE there, interior mean MSE."""
    out = {}
    err_t = (tiled.astype(np.float64) - original) ** 2
    err_u = (untiled.astype(np.float64) - original) ** 2
    for axis, name in ((0, "row"), (1, "column")):
        other = tuple(a for a in range(3) if a != axis)
        line_t, line_u = err_t.mean(axis=other), err_u.mean(axis=other)
        seams = _seams(original.shape[axis], tile)
        if not seams:
            out[name] = None
            continue
        worst = max(seams, key=lambda i: line_t[i] - line_u[i])
        interior = np.delete(line_t, seams).mean()
        out[name] = {"index": int(worst), "tiled_mse": float(line_t[worst]),
                     "untiled_mse": float(line_u[worst]), "interior_mse": float(interior),
                     "seam_mean_mse": float(line_t[seams].mean()),
                     "max_abs_diff_on_seams": int(np.abs(np.take(tiled.astype(np.int16), seams, axis)
                                                         - np.take(untiled.astype(np.int16), seams, axis)).max())}
    return out


def compare_tiling(image: Image.Image, tiles: list[int], quality: float = 75,
                   coder: str = "auto") -> dict:
    """Untiled against each tile size on ``image``: size, PSNR, symbols, pixels, seams."""
    from neuralcodec.codec import Codec

    codec = Codec()
    original = np.asarray(image.convert("RGB"))
    ref = original.astype(np.float64)

    def run(tile: int):
        t = time.perf_counter()
        data = codec.compress(original, quality=quality, coder=coder, tile_size=tile)
        t_enc = time.perf_counter() - t
        t = time.perf_counter()
        decoded = np.asarray(codec.decompress(data, tile_size=tile))
        t_dec = time.perf_counter() - t
        return data, decoded, t_enc, t_dec

    data0, dec0, enc0, dec_s0 = run(0)
    _, _, z0, y0, _, _ = codec.decode_latents(data0)
    pixels = original.shape[0] * original.shape[1]
    rows = [{"tile": 0, "bpp": 8 * len(data0) / pixels, "psnr": psnr(original, dec0),
             "encode_s": enc0, "decode_s": dec_s0}]
    for tile in tiles:
        data, decoded, enc, dec = run(tile)
        _, _, z, y, _, _ = codec.decode_latents(data)
        row = {"tile": tile, "bpp": 8 * len(data) / pixels, "psnr": psnr(original, decoded),
               "encode_s": enc, "decode_s": dec, "same_file": data == data0,
               "z_symbols_differing": int((z != z0).sum()),
               "y_symbols_differing": int((y != y0).sum()), "y_symbols": int(y.size),
               "max_abs_pixel_diff": int(np.abs(decoded.astype(np.int16) - dec0).max()),
               "seams": seam_errors(ref, decoded, dec0, tile)}
        row["psnr_diff"] = row["psnr"] - rows[0]["psnr"]
        rows.append(row)
    return {"width": original.shape[1], "height": original.shape[0], "rows": rows}


def _mib(value) -> str:
    return "—" if value is None else f"{value:.0f}"


def report(results: dict) -> str:
    lines = [f"$ {results['command']}", ""]
    big = results.get("big")
    if big:
        lines += [f"## Peak memory: {big['width']}x{big['height']} ({big['image']}), "
                  f"quality {results['quality']:g}, automatic tiling", ""]
        for direction in ("compress", "decompress"):
            r = big.get(direction)
            if r is None:
                continue
            if "error" in r:
                lines += [f"{direction}: {r['error']}", ""]
                continue
            verdict = "within" if r["peak_mib"] <= LIMIT_MIB else "OVER"
            lines += [f"**{direction}**: peak {_mib(r['peak_mib'])} MiB ({verdict} the "
                      f"{LIMIT_MIB} MiB limit), {r['seconds']:.1f} s; "
                      f"{_mib(r['baseline_mib'])} MiB after loading the model "
                      f"({_mib(r['start_mib'])} MiB at interpreter start)", "",
                      "| stage | seconds | peak RSS so far (MiB) |", "|---|---|---|"]
            lines += [f"| {s['stage']} | {s['seconds']:.1f} | {_mib(s['peak_mib'])} |" for s in r["stages"]]
            lines.append("")
        if "psnr" in big:
            lines += [f"File: {big['bpp']:.3f} bpp; decoded PSNR {big['psnr']:.2f} dB.", ""]
    mid = results.get("tiling")
    if mid:
        lines += [f"## Tiled vs untiled: {mid['width']}x{mid['height']} ({mid['image']}), "
                  f"quality {results['quality']:g}", "",
                  "| tile | bpp | PSNR (dB) | ΔPSNR (dB) | y symbols differing | max pixel diff "
                  "| worst seam row MSE (untiled there) | worst seam column MSE (untiled there) "
                  "| interior line MSE | encode s | decode s |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in mid["rows"]:
            if r["tile"] == 0:
                lines.append(f"| untiled | {r['bpp']:.4f} | {r['psnr']:.3f} | | | | | | | "
                             f"{r['encode_s']:.1f} | {r['decode_s']:.1f} |")
                continue
            cells = []
            for name in ("row", "column"):
                s = r["seams"][name]
                cells.append("—" if s is None else
                             f"{s['tiled_mse']:.2f} ({s['untiled_mse']:.2f}) @{s['index']}")
            interior = r["seams"]["row"] or r["seams"]["column"]
            lines.append(
                f"| {r['tile']} | {r['bpp']:.4f} | {r['psnr']:.3f} | {r['psnr_diff']:+.4f} | "
                f"{r['y_symbols_differing']} of {r['y_symbols']} | {r['max_abs_pixel_diff']} | "
                f"{cells[0]} | {cells[1]} | "
                f"{'—' if interior is None else format(interior['interior_mse'], '.2f')} | "
                f"{r['encode_s']:.1f} | {r['decode_s']:.1f} |")
        lines += ["", "ΔPSNR: tiled encode + tiled decode against untiled encode + untiled decode "
                  "(the project asks for at most 0.05 dB). Seam lines are the rows/columns on "
                  "either side of a tile boundary; 'worst' is the one where tiling adds the "
                  "most error relative to the untiled decode.", ""]
    return "\n".join(lines) + "\n"


def _load(path: str) -> Image.Image:
    with Image.open(path) as im:
        return ImageOps.exif_transpose(im).convert("RGB")


def _parser(prog: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("image", nargs="?", help="image upscaled to 1728x1152 for the tiling "
                   "comparison, e.g. a Kodak image (default: synthetic)")
    p.add_argument("--big", help="big image for the memory measurement (default: synthetic)")
    p.add_argument("--width", type=int, default=6000, help="synthetic big image width")
    p.add_argument("--height", type=int, default=4000, help="synthetic big image height")
    p.add_argument("--quality", type=float, default=75)
    p.add_argument("--coder", default="auto")
    p.add_argument("--tiles", type=int, nargs="+", default=[1024, 256],
                   help="tile core sizes (pixels, multiples of 32) for the tiling comparison")
    p.add_argument("--threads", type=int, help="torch threads (here and in the child processes)")
    p.add_argument("--skip-memory", action="store_true", help="skip the big-image measurement")
    p.add_argument("--skip-tiling", action="store_true", help="skip the 2-megapixel comparison")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args, command = start_command(_parser, argv, prog, "benchmarks.bigimage")
    set_threads(args.threads)
    results = {"command": command, "quality": args.quality}
    if not args.skip_tiling:
        if args.image:
            mid = _load(args.image).resize(MID_SIZE, Image.LANCZOS)
            label = f"{args.image} upscaled (Lanczos)"
        else:
            mid = synthetic_image(*MID_SIZE, seed=1)
            label = "synthetic (benchmarks.speed.synthetic_image, seed 1)"
        results["tiling"] = compare_tiling(mid, args.tiles, args.quality, args.coder)
        results["tiling"]["image"] = label
    if not args.skip_memory:
        if args.big:
            big, label = _load(args.big), args.big
        else:
            big = synthetic_image(args.width, args.height, seed=2)
            label = "synthetic (benchmarks.speed.synthetic_image, seed 2)"
        results["big"] = measure_peak(big, args.quality, args.threads, args.coder)
        results["big"]["image"] = label
        del big
    return finish_report(results, report, args.json)


if __name__ == "__main__":
    sys.exit(main())
