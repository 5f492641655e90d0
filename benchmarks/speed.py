"""Speed benchmark: where our encoder and decoder spend their time.

One job: time one 768x512 image through our codec, stage by stage, next to
Pillow's JPEG, WebP and AVIF on the same pixels, so speed claims and
regressions are measured rather than guessed.

    python benchmarks/speed.py [IMAGE] [--repeat 5] [--threads 2] [--quality 75]
        [--cold-runs 3] [--peak-gflops 70] [--no-pillow] [--json FILE]

* Warm timings: one untimed compress/decompress (loads the model), then the
  median of ``--repeat`` runs.  Per-stage seconds come from
  ``neuralcodec.codec.default_codec().timings`` (reset by every call).
  "other" is the part of the total no stage accounts for.
* Decode rows measured apart (separate calls, same ``--repeat`` median): the
  container parse ``formats.unpack(data)`` (which ``decompress`` runs before its
  first timed stage, so it is part of "other") and the PNG write
  ``formats.encode_image(image, "PNG", buf)`` into memory (what ``vaez
  decompress`` does after decoding, with its PNG settings: zlib's run-length strategy).
* Arithmetic: multiply-accumulates of every Conv2d in the analysis, the
  hyper-analysis, the hyper-synthesis and the synthesis, counted with forward
  hooks on a float run of ``default_codec().net`` at the padded image size and
  divided by the image's pixels (padding counts as work).  The decoder's
  integer hyper-synthesis performs the same convolutions as the float
  ``net.hyper_synthesis`` (im2col + matmul, in float64 for exactness); for
  images above 1024 px a side its tiles also recompute their halos, which is
  not counted.  Each timed stage gets GMAC/s (its MACs over its median
  seconds; the stage seconds include its non-convolution work too) and the
  share of a reference of ``--peak-gflops`` / 2 GMAC/s (default 70 GFLOP/s,
  what the convolutions reach on the 2-core development machine; one MAC is
  two FLOPs).  float64 runs at about half the float32 peak.
* Cold start: a fresh Python process times ``import neuralcodec`` and then its
  first compress and decompress (torch import and weight loading included).
  The OS file cache is warm, so this is a best case for a first run.
* Cold CLI: median wall time over ``--cold-runs`` fresh processes of
  ``vaez decompress FILE.vaez -o OUT.png`` (the file is the benchmark image
  compressed once), ``vaez info FILE.vaez``, ``vaez --help`` and
  ``vaez --version``, with bare ``python -c pass`` as the floor.  Each runs
  ``cli.main()`` exactly as the installed ``vaez`` console script does
  (``vaez = cli:main``), from this repository (PYTHONPATH), and an ``atexit``
  hook records whether torch was imported.  Targets: decompress <= 2.5 s;
  info, --help and --version <= 0.3 s without importing torch.
* Without IMAGE, a deterministic synthetic image with natural-image
  statistics (1/f spectrum, smooth gradients, sharp-edged shapes, texture,
  sensor noise) is used, so the benchmark needs no data files.
"""

from __future__ import annotations

import argparse
import io
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

import neuralcodec  # noqa: E402,F401  (before NumPy: its thread-pool settings, see THREAD_SETTINGS)
import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from benchmarks.common import finish_report, set_threads, start_command
from benchmarks.metrics import psnr
from benchmarks.rd import (BASELINES, CodecUnavailable, _describe,
                           pillow_decode, pillow_encoder)

__all__ = ["synthetic_image", "time_ours", "decode_measured_apart", "time_pillow", "cold_start",
           "cold_cli", "run_cli_once", "count_macs", "stage_throughput", "report", "main"]

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


def machine_reference(repeat: int = 5) -> dict:
    """How fast the machine is right now, to compare runs by: a float32 NumPy matrix product
    (BLAS, all its threads; the shape of a 3x3 synthesis layer over a 768x512 image as one
    product) in GFLOP/s, and zlib level 6 (one core, what a PNG write does) in MB/s. Shared
    machines drift: the development machine's speed varies by a third within minutes."""
    import zlib

    rng = np.random.default_rng(0)
    a = rng.standard_normal((6272, 1728), dtype=np.float32)
    b = rng.standard_normal((1728, 128), dtype=np.float32)
    a @ b
    product = _median_seconds(lambda: a @ b, repeat)
    raw = (rng.integers(0, 64, 4 << 20, dtype=np.uint8) + np.arange(4 << 20, dtype=np.uint8) // 7).tobytes()
    squeeze = _median_seconds(lambda: zlib.compress(raw, 6), repeat)
    return {"sgemm_gflops": 2 * a.shape[0] * a.shape[1] * b.shape[1] / product / 1e9,
            "zlib_mb_per_s": len(raw) / squeeze / 1e6}


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


def _median_seconds(work, repeat: int) -> float:
    """Median wall seconds of ``repeat`` calls of ``work()``."""
    seconds = []
    for _ in range(repeat):
        t = time.perf_counter()
        work()
        seconds.append(time.perf_counter() - t)
    return _median(seconds)


def decode_measured_apart(data: bytes, decoded: Image.Image, repeat: int = 5) -> dict:
    """Median seconds of the decode work the codec's ``timings`` do not show on
    their own: ``container parse`` (``formats.unpack``; inside ``decompress`` it
    falls in "other") and ``PNG write`` (``formats.encode_image`` to PNG in
    memory, as ``vaez decompress`` writes its output)."""
    import formats

    return {"container parse": _median_seconds(lambda: formats.unpack(data), repeat),
            "PNG write": _median_seconds(
                lambda: formats.encode_image(decoded, "PNG", io.BytesIO()), repeat)}


def time_ours(image: Image.Image, quality: float = 75, coder: str = "auto",
              repeat: int = 5) -> dict:
    """Warm encode/decode timings of our codec: totals (median seconds),
    per-stage medians from ``default_codec().timings``, the decode rows of
    `decode_measured_apart`, file size and PSNR.
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
        "decode_measured_apart": decode_measured_apart(data, decoded, repeat),
    }


MAC_PARTS = ("analysis", "hyper_analysis", "hyper_synthesis", "synthesis", "postfilter")

# Timed codec stages and the network parts whose convolutions run in them.
STAGE_PARTS = (
    ("encode", "analysis", ("analysis",), "float32"),
    ("encode", "hyper", ("hyper_analysis", "hyper_synthesis"), "float32 h_a + float64 integer h_s"),
    ("decode", "hyper", ("hyper_synthesis",), "float64 integer h_s"),
    ("decode", "synthesis", ("synthesis",), "float32"),
    ("decode", "postfilter", ("postfilter",), "float32"),
)
DIRECTION_PARTS = {"encode": ("analysis", "hyper_analysis", "hyper_synthesis"),
                   "decode": ("hyper_synthesis", "synthesis", "postfilter")}


def count_macs(width: int, height: int, net=None) -> dict:
    """Multiply-accumulates of every Conv2d in each part of ``MAC_PARTS`` (that the network
    has: the post-filter is optional) for one
    ``width`` x ``height`` image, from forward hooks on a float run at the padded
    size (``net``: default ``default_codec().net``).  Returns the image and
    padded sizes, ``macs`` (part -> int) and ``per_pixel`` (part -> MACs per
    image pixel)."""
    import torch
    from torch import nn

    from neuralcodec.model.network import PAD_MULTIPLE

    if net is None:
        from neuralcodec.codec import default_codec

        net = default_codec().net
    padded_h = -(-height // PAD_MULTIPLE) * PAD_MULTIPLE
    padded_w = -(-width // PAD_MULTIPLE) * PAD_MULTIPLE
    macs = {part: 0 for part in MAC_PARTS if getattr(net, part, None) is not None}

    def hook_for(part):
        def hook(conv, inputs, output):
            kh, kw = conv.kernel_size
            macs[part] += output.numel() * (conv.in_channels // conv.groups) * kh * kw
        return hook

    handles = [module.register_forward_hook(hook_for(part))
               for part in macs for module in getattr(net, part).modules()
               if isinstance(module, nn.Conv2d)]
    try:
        weight = next(net.parameters())
        with torch.inference_mode():
            x = torch.zeros(1, 3, padded_h, padded_w, dtype=weight.dtype, device=weight.device)
            y = net.analysis(x)
            net.hyper_synthesis(torch.round(net.hyper_analysis(y)))
            x_hat = net.synthesis(y)
            if net.postfilter is not None:
                net.postfilter(x_hat, torch.zeros(1, dtype=weight.dtype, device=weight.device))
    finally:
        for handle in handles:
            handle.remove()
    pixels = width * height
    return {"width": width, "height": height, "padded_width": padded_w, "padded_height": padded_h,
            "macs": macs, "per_pixel": {part: n / pixels for part, n in macs.items()}}


def stage_throughput(ours: dict, macs: dict, peak_gflops: float = 70.0) -> list[dict]:
    """Rows of MACs per pixel, GMAC/s and share of the reference (``peak_gflops``
    / 2 GMAC/s) for every timed stage of ``STAGE_PARTS`` present in ``ours``
    (a `time_ours` result) and for each direction's total; ``macs`` is a
    `count_macs` result."""
    reference = peak_gflops / 2
    pixels = macs["width"] * macs["height"]
    timed = []
    for direction, parts in DIRECTION_PARTS.items():
        timed += [(direction, stage, stage_parts, precision, ours[f"{direction}_stages"].get(stage))
                  for d, stage, stage_parts, precision in STAGE_PARTS if d == direction]
        timed.append((direction, "total", parts, "", ours[f"{direction}_s"]))
    rows = []
    for direction, stage, parts, precision, seconds in timed:
        if not seconds:
            continue
        work = sum(macs["macs"].get(part, 0) for part in parts)
        gmac_s = work / seconds / 1e9
        rows.append({"direction": direction, "stage": stage, "parts": list(parts),
                     "precision": precision, "macs": work, "macs_per_pixel": work / pixels,
                     "seconds": seconds, "gmac_s": gmac_s,
                     "share_of_reference": gmac_s / reference})
    return rows


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


def _fresh_env(threads: int | None = None) -> dict:
    """Environment for a fresh interpreter that imports this repository's code
    first (PYTHONPATH = repository root), with OMP_NUM_THREADS when ``threads``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


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
    env = _fresh_env(threads)
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


# Runs cli.main() as the `vaez` console script does (`vaez = cli:main`); an atexit hook
# writes "torch" or "" to the file named by $VAEZ_SPEED_TORCH_MARKER, touching neither the
# exit status nor stdout/stderr.
_CLI_SCRIPT = r"""
import atexit, os, sys

_marker = os.environ.pop("VAEZ_SPEED_TORCH_MARKER")

def _record_torch():
    with open(_marker, "w") as f:
        f.write("torch" if "torch" in sys.modules else "")

atexit.register(_record_torch)
from cli import main
sys.exit(main())
"""

# name -> (arguments with {file} and {out} placeholders, target seconds, torch allowed)
CLI_COMMANDS = {
    "decompress": (["decompress", "{file}", "-o", "{out}"], 2.5, True),
    "info": (["info", "{file}"], 0.3, False),
    "--help": (["--help"], 0.3, False),
    "--version": (["--version"], 0.3, False),
}


def run_cli_once(args: list[str], env: dict, cwd: str | Path) -> dict:
    """One fresh ``vaez ARGS`` process: wall ``seconds`` (interpreter start-up
    included), ``returncode``, ``torch_imported`` (None if unknown) and the last
    stderr line as ``error`` when it failed."""
    marker = Path(cwd) / "torch-marker.txt"
    marker.unlink(missing_ok=True)
    env = dict(env, VAEZ_SPEED_TORCH_MARKER=str(marker))
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _CLI_SCRIPT, *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=600)
    sample = {"seconds": time.perf_counter() - t, "returncode": proc.returncode,
              "torch_imported": marker.read_text() == "torch" if marker.exists() else None}
    if proc.returncode != 0:
        sample["error"] = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return sample


def _python_floor(env: dict, cwd: str | Path, runs: int) -> float:
    """Median wall seconds of a bare ``python -c pass`` (interpreter start-up alone)."""
    seconds = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], env=env, cwd=cwd, check=True, timeout=600)
        seconds.append(time.perf_counter() - t)
    return _median(seconds)


def cold_cli(data: bytes, threads: int | None = None, runs: int = 3,
             commands=tuple(CLI_COMMANDS)) -> dict:
    """Median wall seconds over ``runs`` fresh processes of each ``CLI_COMMANDS``
    entry in ``commands`` on ``data`` (a .vaez file), whether torch was imported,
    the target and whether it is met; plus the bare-interpreter floor."""
    env = _fresh_env(threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "image.vaez"
        path.write_bytes(data)
        for name in commands:
            template, target, torch_allowed = CLI_COMMANDS[name]
            samples = []
            for i in range(runs):
                args = [a.format(file=path.name, out=f"out-{i}.png") for a in template]
                samples.append(run_cli_once(args, env, tmp))
            shown = " ".join(["vaez"] + [a.format(file="FILE.vaez", out="OUT.png") for a in template])
            row = {"name": name, "command": shown, "target_s": target,
                   "torch_allowed": torch_allowed}
            failed = next((s for s in samples if s["returncode"] != 0), None)
            if failed:
                row["error"] = f"exit status {failed['returncode']}: {failed.get('error')}"
            else:
                torch_flags = {s["torch_imported"] for s in samples}
                row["seconds"] = _median([s["seconds"] for s in samples])
                row["torch_imported"] = torch_flags.pop() if len(torch_flags) == 1 else None
                row["meets_target"] = (row["seconds"] <= target
                                       and (torch_allowed or row["torch_imported"] is False))
            rows.append(row)
        floor = _python_floor(env, tmp, runs)
    return {"runs": runs, "file_bytes": len(data), "python_floor_s": floor, "commands": rows}


def _ms(seconds) -> str:
    return "—" if seconds is None else f"{1000 * seconds:.1f}"


def _stage_lines(ours: dict) -> list[str]:
    """Per-stage table of a `time_ours` result, with the decode rows measured apart."""
    if not (ours["encode_stages"] or ours["decode_stages"]):
        return ["The codec reports no per-stage timings; totals only.", ""]
    lines = ["| direction | stage | median ms | share of total |", "|---|---|---|---|"]
    for direction in ("encode", "decode"):
        total = ours[f"{direction}_s"]
        for stage, seconds in ours[f"{direction}_stages"].items():
            lines.append(f"| {direction} | {stage} | {_ms(seconds)} | {100 * seconds / total:.0f}% |")
        lines.append(f"| {direction} | **total** | **{_ms(total)}** | 100% |")
    apart = ours.get("decode_measured_apart") or {}
    if apart:
        total = ours["decode_s"]
        notes = {"container parse": "measured apart; inside 'other'",
                 "PNG write": "measured apart; after decompress"}
        for stage, seconds in apart.items():
            lines.append(f"| decode | {stage} ({notes.get(stage, 'measured apart')}) | "
                         f"{_ms(seconds)} | {100 * seconds / total:.0f}% |")
        if "PNG write" in apart:
            both = total + apart["PNG write"]
            lines.append(f"| decode | **total + PNG write** | **{_ms(both)}** | "
                         f"{100 * both / total:.0f}% |")
    return lines + [""]


def _throughput_lines(results: dict) -> list[str]:
    """MACs per pixel by network part, and GMAC/s per timed stage."""
    macs, rows = results.get("macs"), results.get("throughput")
    if not macs:
        return []
    peak = results.get("peak_gflops", 70.0)
    parts = ", ".join(f"{part} {n:,.0f}" for part, n in macs["per_pixel"].items())
    lines = [f"## Arithmetic: multiply-accumulates per pixel (convolutions, "
             f"{macs['padded_width']}x{macs['padded_height']} padded)", "",
             f"MACs per image pixel: {parts}.", ""]
    if rows:
        lines += [f"| direction | stage | MACs/pixel | median ms | GMAC/s | "
                  f"share of {peak / 2:g} GMAC/s | arithmetic |", "|---|---|---|---|---|---|---|"]
        for row in rows:
            stage = "**total**" if row["stage"] == "total" else row["stage"]
            note = row["precision"]
            if row["precision"].startswith("float64"):
                note += f" (float64 peak is about half: ~{200 * row['share_of_reference']:.0f}% of it)"
            lines.append(f"| {row['direction']} | {stage} | {row['macs_per_pixel']:,.0f} | "
                         f"{_ms(row['seconds'])} | {row['gmac_s']:.1f} | "
                         f"{100 * row['share_of_reference']:.0f}% | {note} |")
        lines += ["", f"Reference: {peak:g} GFLOP/s = {peak / 2:g} GMAC/s (--peak-gflops); stage "
                      "seconds include the stage's non-convolution work.", ""]
    return lines


def _cold_start_lines(cold: dict | None) -> list[str]:
    """Table of a `cold_start` result."""
    lines = []
    if cold and "import_s" in cold:
        lines += [f"## Cold start (fresh process, median of {cold['runs']})", "",
                  "| import neuralcodec | first compress (torch + model load) "
                  "| first decompress | whole process |",
                  "|---|---|---|---|",
                  f"| {_ms(cold['import_s'])} ms | {_ms(cold.get('first_compress_s'))} ms | "
                  f"{_ms(cold.get('first_decompress_s'))} ms | {_ms(cold['process_s'])} ms |", ""]
    if cold and "error" in cold:
        lines += [f"Cold start: {cold['error']}", ""]
    return lines


def _yes_no(flag) -> str:
    return "?" if flag is None else ("yes" if flag else "no")


def _cold_cli_lines(cli: dict | None) -> list[str]:
    """Table of a `cold_cli` result, each command against its target."""
    if not cli:
        return []
    lines = [f"## Cold CLI (fresh process each, wall time, median of {cli['runs']})", "",
             "| command | median ms | target | torch imported | meets target |",
             "|---|---|---|---|---|",
             f"| python -c pass (interpreter alone) | {_ms(cli['python_floor_s'])} | | | |"]
    for row in cli["commands"]:
        target = f"≤ {row['target_s']:g} s" + ("" if row["torch_allowed"] else ", no torch")
        if "error" in row:
            lines.append(f"| {row['command']} | failed: {row['error']} | {target} | | |")
            continue
        lines.append(f"| {row['command']} | {_ms(row['seconds'])} | {target} | "
                     f"{_yes_no(row['torch_imported'])} | "
                     f"{'yes' if row['meets_target'] else '**no**'} |")
    return lines + ["", f"FILE.vaez: the benchmark image compressed once ({cli['file_bytes']:,} bytes).",
                    ""]


def report(results: dict) -> str:
    """Markdown tables for a ``main`` result."""
    lines = [f"$ {results['command']}", "",
             f"Image: {results['image']} ({results['width']}x{results['height']}); "
             f"warm timings are medians of {results['repeat']} runs after one warm-up; "
             f"torch threads: {results['environment']['versions'].get('torch_threads')}.", ""]
    machine = results.get("machine")
    if machine:
        before, after = machine["before"], machine["after"]
        lines += [f"Machine speed at the start / end of the run (compare runs by these): float32 "
                  f"NumPy matrix product {before['sgemm_gflops']:.0f} / {after['sgemm_gflops']:.0f} "
                  f"GFLOP/s, zlib level 6 on one core {before['zlib_mb_per_s']:.0f} / "
                  f"{after['zlib_mb_per_s']:.0f} MB/s.", ""]
    ours = results.get("ours")
    if ours and "error" not in ours:
        lines += [f"## ours ({ours['setting']}): {ours['bpp']:.3f} bpp, {ours['psnr']:.2f} dB", ""]
        lines += _stage_lines(ours)
        lines += _throughput_lines(results)
    elif ours:
        lines += [f"ours: not measured ({ours['error']})", ""]
    lines += _cold_start_lines(results.get("cold"))
    lines += _cold_cli_lines(results.get("cold_cli"))

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
    p.add_argument("--cold-runs", type=int, default=3,
                   help="fresh processes per cold-start and cold-CLI measurement (0: skip both)")
    p.add_argument("--peak-gflops", type=float, default=70.0,
                   help="reference convolution speed in GFLOP/s for the GMAC/s shares "
                        "(default 70: the 2-core development machine)")
    p.add_argument("--no-pillow", action="store_true", help="skip the Pillow comparison")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Command-line entry point; ``argv`` without the program name."""
    args, command = start_command(_parser, argv, prog, "benchmarks.speed")
    if args.repeat < 1:
        raise SystemExit("error: --repeat must be at least 1")
    if not args.peak_gflops > 0:
        raise SystemExit("error: --peak-gflops must be positive")
    set_threads(args.threads)
    if args.image:
        with Image.open(args.image) as im:
            image = ImageOps.exif_transpose(im).convert("RGB")
        label = args.image
    else:
        image = synthetic_image()
        label = "synthetic (benchmarks.speed.synthetic_image, seed 0)"

    results = {"command": command, "image": label, "width": image.size[0],
               "height": image.size[1], "repeat": args.repeat,
               "machine": {"before": machine_reference(args.repeat)}}
    try:
        results["ours"] = time_ours(image, args.quality, args.coder, args.repeat)
    except CodecUnavailable as exc:
        print(f"skipping ours: {exc}", file=sys.stderr)
        results["ours"] = {"error": str(exc)}
    if "error" not in results["ours"]:
        results["peak_gflops"] = args.peak_gflops
        results["macs"] = count_macs(*image.size)
        results["throughput"] = stage_throughput(results["ours"], results["macs"], args.peak_gflops)
    if args.cold_runs > 0 and "error" not in results["ours"]:  # cold runs need a working codec
        results["cold"] = cold_start(image, args.quality, args.coder, args.threads, args.cold_runs)
        from neuralcodec.codec import default_codec

        data = default_codec().compress(image, quality=args.quality, coder=args.coder)
        results["cold_cli"] = cold_cli(data, args.threads, args.cold_runs)
    if not args.no_pillow:
        results["pillow"] = time_pillow(image, args.repeat, threads=args.threads)
    results["machine"]["after"] = machine_reference(args.repeat)
    return finish_report(results, report, args.json)


if __name__ == "__main__":
    sys.exit(main())
