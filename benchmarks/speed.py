"""Speed benchmark: where our encoder and decoder spend their time.

One job: time one 768x512 image through our codec, stage by stage, next to
Pillow's JPEG, WebP and AVIF on the same pixels, so speed claims and
regressions are measured rather than guessed.

    python benchmarks/speed.py [IMAGE] [--repeat 5] [--threads 2] [--quality 75]

* Warm timings: one untimed compress/decompress (loads the model), then the
  median of ``--repeat`` runs.  Per-stage seconds come from
  ``neuralcodec.codec.default_codec().timings`` (reset by every call).
  "other" is the part of the total no stage accounts for.
* Cold start: a fresh Python process times ``import neuralcodec`` and then its
  first compress and decompress (torch import and weight loading included).
  The OS file cache is warm, so this is a best case for a first run.
* Without IMAGE, a deterministic synthetic image with natural-image
  statistics (1/f spectrum, smooth gradients, sharp-edged shapes, texture,
  sensor noise) is used, so the benchmark needs no data files.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from benchmarks.common import finish_report, set_threads, start_command
from benchmarks.metrics import psnr
from benchmarks.rd import (BASELINES, CodecUnavailable, _describe,
                           pillow_decode, pillow_encoder)

__all__ = ["synthetic_image", "time_ours", "time_pillow", "cold_start", "report", "main"]

REPO_ROOT = Path(__file__).resolve().parent.parent


def synthetic_image(width: int = 768, height: int = 512, seed: int = 0) -> Image.Image:
    """A deterministic RGB test image that compresses roughly like a photo.

    Luminance is 1/f noise (the amplitude spectrum of natural scenes) over a
    vertical gradient; chroma is smoother noise; on top sit sharp-edged
    shapes (some flat, some with texture), a blurred region, and a little
    Gaussian sensor noise.
    """
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    freq = np.hypot(fx, fy)
    freq[0, 0] = 1.0

    def field(exponent: float) -> np.ndarray:
        spectrum = (rng.normal(size=freq.shape) + 1j * rng.normal(size=freq.shape)) / freq ** exponent
        spectrum[0, 0] = 0
        values = np.fft.irfft2(spectrum, s=(height, width))
        return (values - values.mean()) / values.std()

    luma = 115 + 32 * field(1.2) + np.linspace(40, -40, height)[:, None]
    cb, cr = 18 * field(1.5), 14 * field(1.5)
    rgb = np.stack([luma + 1.402 * cr, luma - 0.344 * cb - 0.714 * cr, luma + 1.772 * cb], axis=2)
    image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))

    draw = ImageDraw.Draw(image, "RGBA")
    for _ in range(14):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        w, h = rng.integers(20, width // 3), rng.integers(20, height // 3)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3)) + (int(rng.integers(150, 256)),)
        kind = rng.integers(3)
        if kind == 0:
            draw.ellipse([x0, y0, x0 + w, y0 + h], fill=colour)
        elif kind == 1:
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=colour)
        else:
            pts = [(int(x0 + rng.integers(-w, w)), int(y0 + rng.integers(-h, h))) for _ in range(5)]
            draw.polygon(pts, fill=colour)
    for _ in range(25):   # thin lines: wires, branches, text-like strokes
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        x1, y1 = x0 + rng.integers(-150, 150), y0 + rng.integers(-60, 60)
        shade = int(rng.integers(0, 256))
        draw.line([(int(x0), int(y0)), (int(x1), int(y1))], fill=(shade, shade, shade, 255),
                  width=int(rng.integers(1, 4)))

    pixels = np.asarray(image).astype(np.float64)
    # A textured patch (grass/fabric-like fine detail) and an out-of-focus region.
    ty, tx = height // 2, width // 8
    pixels[ty:ty + height // 3, tx:tx + width // 4] += 30 * rng.standard_normal(
        (height // 3, width // 4, 1))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    box = (width * 5 // 8, height // 10, width * 15 // 16, height * 4 // 10)
    image.paste(image.crop(box).filter(ImageFilter.GaussianBlur(6)), box[:2])
    pixels = np.asarray(image).astype(np.float64) + rng.normal(0, 1.5, (height, width, 3))
    return Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8))


def _median(values) -> float:
    return float(statistics.median(values))


def _stage_medians(runs: list[dict], totals: list[float]) -> dict:
    """Median seconds per stage over runs (stages in first-seen order) plus
    'other' = median of (total - sum of stages); empty when no stages."""
    names: list[str] = []
    for run in runs:
        names += [n for n in run if n not in names]
    if not names:
        return {}
    stages = {n: _median([run.get(n, 0.0) for run in runs]) for n in names}
    stages["other"] = max(0.0, _median([t - sum(run.values()) for run, t in zip(runs, totals)]))
    return stages


def time_ours(image: Image.Image, quality: float = 75, coder: str = "auto",
              repeat: int = 5) -> dict:
    """Warm encode/decode timings of our codec: totals (median seconds),
    per-stage medians from ``default_codec().timings``, file size and PSNR.
    Raises CodecUnavailable when the codec fails (e.g. missing weights)."""
    from neuralcodec.codec import default_codec

    try:
        codec = default_codec()                                  # loads torch and the weights
        data = codec.compress(image, quality=quality, coder=coder)     # warm-up
        decoded = codec.decompress(data)
    except Exception as exc:  # noqa: BLE001
        raise CodecUnavailable(f"the codec failed: {_describe(exc)}") from exc

    enc_totals, dec_totals, enc_stages, dec_stages = [], [], [], []
    for _ in range(repeat):
        t = time.perf_counter()
        data = codec.compress(image, quality=quality, coder=coder)
        enc_totals.append(time.perf_counter() - t)
        enc_stages.append(dict(codec.timings))
        t = time.perf_counter()
        decoded = codec.decompress(data)
        dec_totals.append(time.perf_counter() - t)
        dec_stages.append(dict(codec.timings))
    rec = np.asarray(decoded.convert("RGB"))
    return {
        "name": "ours", "setting": f"quality={quality:g}, coder={coder}",
        "bytes": len(data), "bpp": 8 * len(data) / (image.size[0] * image.size[1]),
        "psnr": psnr(np.asarray(image), rec),
        "encode_s": _median(enc_totals), "decode_s": _median(dec_totals),
        "encode_stages": _stage_medians(enc_stages, enc_totals),
        "decode_stages": _stage_medians(dec_stages, dec_totals),
        "stage_source": "neuralcodec.codec.default_codec().timings",
    }


def time_pillow(image: Image.Image, repeat: int = 5, quality: int = 75,
                threads: int | None = None) -> list[dict]:
    """Median encode/decode seconds of Pillow's JPEG, WebP and AVIF at
    ``quality`` with the settings of ``benchmarks.rd.BASELINES``."""
    rows = []
    for name, spec in BASELINES.items():
        options = dict(spec["options"])
        if spec["format"] == "AVIF" and threads:
            options["max_threads"] = threads
        encode = pillow_encoder(spec["format"], options)
        try:
            data = encode(image, quality)
        except (OSError, KeyError, ValueError) as exc:
            rows.append({"name": name, "error": str(exc)})
            continue
        pillow_decode(data)
        enc, dec = [], []
        for _ in range(repeat):
            t = time.perf_counter()
            data = encode(image, quality)
            enc.append(time.perf_counter() - t)
            t = time.perf_counter()
            decoded = pillow_decode(data)
            dec.append(time.perf_counter() - t)
        setting = ", ".join(f"{k}={v}" for k, v in options.items())
        rows.append({"name": name, "setting": f"quality={quality}, {setting}",
                     "bytes": len(data), "bpp": 8 * len(data) / (image.size[0] * image.size[1]),
                     "psnr": psnr(np.asarray(image), np.asarray(decoded)),
                     "encode_s": _median(enc), "decode_s": _median(dec)})
    return rows


_COLD_SCRIPT = r"""
import json, sys, time
t0 = time.perf_counter()
import neuralcodec
t1 = time.perf_counter()
from PIL import Image
image = Image.open(sys.argv[1]); image.load()
out = {"import_s": t1 - t0}
try:
    t2 = time.perf_counter()
    data = neuralcodec.compress(image, quality=float(sys.argv[2]), coder=sys.argv[3])
    t3 = time.perf_counter()
    neuralcodec.decompress(data)
    t4 = time.perf_counter()
    out.update(first_compress_s=t3 - t2, first_decompress_s=t4 - t3)
except Exception as exc:
    out["error"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(out))
"""


def cold_start(image: Image.Image, quality: float = 75, coder: str = "auto",
               threads: int | None = None, runs: int = 3) -> dict:
    """Median over ``runs`` fresh interpreters of: ``import neuralcodec``
    seconds, first compress and first decompress seconds, and the whole
    process wall time (interpreter start-up included)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    samples = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "image.png"
        image.save(path)
        for _ in range(runs):
            t = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", _COLD_SCRIPT, str(path), str(quality), coder],
                                  capture_output=True, text=True, env=env, cwd=tmp, timeout=600)
            wall = time.perf_counter() - t
            if proc.returncode != 0:
                last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                return {"error": f"cold run failed: {last}"}
            sample = json.loads(proc.stdout.strip().splitlines()[-1])
            sample["process_s"] = wall
            samples.append(sample)
    result = {key: _median([s[key] for s in samples]) for key in samples[0] if key != "error"}
    result["runs"] = runs
    if "error" in samples[0]:
        result["error"] = f"first compress/decompress failed: {samples[0]['error']}"
    return result


def _ms(seconds) -> str:
    return "—" if seconds is None else f"{1000 * seconds:.1f}"


def report(results: dict) -> str:
    """Markdown tables for a ``main`` result."""
    lines = [f"$ {results['command']}", "",
             f"Image: {results['image']} ({results['width']}x{results['height']}); "
             f"warm timings are medians of {results['repeat']} runs after one warm-up; "
             f"torch threads: {results['environment']['versions'].get('torch_threads')}.", ""]
    ours = results.get("ours")
    if ours and "error" not in ours:
        lines += [f"## ours ({ours['setting']}): {ours['bpp']:.3f} bpp, {ours['psnr']:.2f} dB", ""]
        if ours["encode_stages"] or ours["decode_stages"]:
            lines += ["| direction | stage | median ms | share of total |", "|---|---|---|---|"]
            for direction, key in (("encode", "encode_stages"), ("decode", "decode_stages")):
                total = ours[f"{direction}_s"]
                for stage, seconds in ours[key].items():
                    lines.append(f"| {direction} | {stage} | {_ms(seconds)} | "
                                 f"{100 * seconds / total:.0f}% |")
                lines.append(f"| {direction} | **total** | **{_ms(total)}** | 100% |")
            lines.append("")
        else:
            lines += ["The codec reports no per-stage timings; totals only.", ""]
    elif ours:
        lines += [f"ours: not measured ({ours['error']})", ""]

    cold = results.get("cold")
    if cold and "import_s" in cold:
        lines += [f"## Cold start (fresh process, median of {cold['runs']})", "",
                  "| import neuralcodec | first compress (torch + model load) "
                  "| first decompress | whole process |",
                  "|---|---|---|---|",
                  f"| {_ms(cold['import_s'])} ms | {_ms(cold.get('first_compress_s'))} ms | "
                  f"{_ms(cold.get('first_decompress_s'))} ms | {_ms(cold['process_s'])} ms |", ""]
    if cold and "error" in cold:
        lines += [f"Cold start: {cold['error']}", ""]

    lines += ["## Encode/decode, warm (ms, median)", "",
              "| codec | setting | bpp | PSNR (dB) | encode ms | decode ms |",
              "|---|---|---|---|---|---|"]
    rows = ([ours] if ours and "error" not in ours else []) + results.get("pillow", [])
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['name']} | not available: {row['error']} | | | | |")
            continue
        lines.append(f"| {row['name']} | {row['setting']} | {row['bpp']:.3f} | {row['psnr']:.2f} | "
                     f"{_ms(row['encode_s'])} | {_ms(row['decode_s'])} |")
    lines += ["", "Same quality number does not mean same quality: compare bpp and PSNR too."]
    return "\n".join(lines) + "\n"


def _parser(prog: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("image", nargs="?", help="image file (default: a synthetic 768x512 image)")
    p.add_argument("--repeat", type=int, default=5, help="timed runs per measurement (median)")
    p.add_argument("--threads", type=int, help="torch threads (and AVIF encoder threads)")
    p.add_argument("--quality", type=float, default=75)
    p.add_argument("--coder", default="auto")
    p.add_argument("--cold-runs", type=int, default=3, help="fresh processes for cold start (0: skip)")
    p.add_argument("--no-pillow", action="store_true", help="skip the Pillow comparison")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Command-line entry point; ``argv`` without the program name."""
    args, command = start_command(_parser, argv, prog, "benchmarks.speed")
    if args.repeat < 1:
        raise SystemExit("error: --repeat must be at least 1")
    set_threads(args.threads)
    if args.image:
        with Image.open(args.image) as im:
            image = ImageOps.exif_transpose(im).convert("RGB")
        label = args.image
    else:
        image = synthetic_image()
        label = "synthetic (benchmarks.speed.synthetic_image, seed 0)"

    results = {"command": command, "image": label, "width": image.size[0],
               "height": image.size[1], "repeat": args.repeat}
    try:
        results["ours"] = time_ours(image, args.quality, args.coder, args.repeat)
    except CodecUnavailable as exc:
        print(f"skipping ours: {exc}", file=sys.stderr)
        results["ours"] = {"error": str(exc)}
    if args.cold_runs > 0 and "error" not in results["ours"]:  # cold runs need a working codec
        results["cold"] = cold_start(image, args.quality, args.coder, args.threads, args.cold_runs)
    if not args.no_pillow:
        results["pillow"] = time_pillow(image, args.repeat, threads=args.threads)
    return finish_report(results, report, args.json)


if __name__ == "__main__":
    sys.exit(main())
