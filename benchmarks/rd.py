"""Rate-distortion benchmark: our codec against Pillow's JPEG, WebP and AVIF.

One job: produce the rate-distortion numbers we publish, reproducibly, from one
command.  For every image of a directory it sweeps each codec over a set of
quality settings, decodes, and records the whole-file size in bits per pixel,
RGB PSNR, RGB MS-SSIM and encode/decode seconds; it then averages per
operating point (mean bpp and mean PSNR over images at each quality, the
CompressAI convention), computes Bjøntegaard delta rates between the curves
and, optionally, against published Kodak curves (anchors).

    python benchmarks/rd.py /work/shared/data/kodak --out results/ --plot \\
        --anchors /work/shared/anchors/kodak

``--effort 0 2`` measures our codec once per encoder effort (``Codec.compress(...,
effort=E)``, see ``neuralcodec/refine.py``: slower encode, smaller files, same
decoder).  Each effort is its own curve, named ``ours`` for the default effort
(``neuralcodec.efforts.DEFAULT_EFFORT``, what a user gets) and ``ours effort=E``
otherwise, with everything ``ours`` gets (BD-rates against the baselines and
anchors, a per-quality table, timings, a line in the plot), plus a table of the
BD-rate of every effort > 0 against effort 0 (no refinement pass) of the same coder.

``--validation-split`` measures, instead of every image of DIR, only the
held-out validation images of a training folder, chosen exactly as
``neuralcodec.train`` chooses them (``list_images(DIR)``, recursive, filtered by
``is_validation(path, --val-fraction)``), and says so at the top of the report:

    python benchmarks/rd.py /work/shared/data/train --validation-split --out results/val

Outputs: a Markdown report on stdout (headed by the exact command line), and in
``--out``: ``rd.json`` (every per-image and averaged point, settings and
library versions), ``rd.md`` (the report) and, with ``--plot`` and matplotlib,
``rd.png``.

The functions are importable (``measure_ours``, ``measure_pillow``,
``summarize``, ``bd_rates``, ``effort_bd_rates``, ``validation_split``,
``load_anchors``, ``report``, ``run``, ``main``)
so a ``vaez bench`` command can reuse them.

Conventions worth knowing when reading the numbers:

* bpp = 8 * len(file) / (W * H) for every codec we run, header included.
  Published anchors (CompressAI's JSON files) count only the entropy-coded
  payload, so BD-rates against anchors are slightly pessimistic for us.
* MS-SSIM in dB is -10*log10(1 - mean MS-SSIM), the mean of the linear values
  taken over images first (as CompressAI plots it); BD-rates "in MS-SSIM"
  use that dB scale as the quality axis.
* Every input is converted to RGB (alpha dropped, EXIF orientation applied)
  before any codec sees it, so all codecs get identical pixels.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Iterable

if __package__ in (None, ""):
    # Run as a script (python benchmarks/rd.py): make the repository importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import neuralcodec  # light, and before NumPy for its thread-pool settings (THREAD_SETTINGS)
import numpy as np
from PIL import Image, ImageOps, features

from benchmarks.bdrate import bd_rate_result
from benchmarks.common import set_threads, start_command
from benchmarks.metrics import MIN_SIDE, ms_ssim, msssim_db, psnr
from neuralcodec.efforts import DEFAULT_EFFORT, EFFORTS  # noqa: F401 (EFFORTS re-exported)

__all__ = [
    "DEFAULT_QUALITIES", "BASELINES", "EFFORTS", "DEFAULT_VAL_FRACTION", "CodecUnavailable",
    "load_images", "validation_split", "measure",
    "pillow_encoder", "pillow_decode",
    "measure_ours", "ours_name", "measure_pillow", "summarize", "bd_rates", "effort_bd_rates",
    "load_anchors",
    "anchor_bd_rates", "environment", "report", "plot", "run", "main",
]

DEFAULT_QUALITIES = [1, 8, 16, 25, 35, 45, 55, 65, 75, 85, 92, 100]
DEFAULT_VAL_FRACTION = 0.05       # neuralcodec.train's --val-fraction default

# Quality sweeps chosen so each baseline spans roughly 0.1-0.2 to 2-4 bpp on
# Kodak (JPEG cannot go much below 0.2 bpp at any quality).
BASELINES = {
    "JPEG": {
        "format": "JPEG",
        "qualities": [5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95],
        "options": {"subsampling": "4:2:0", "optimize": False, "progressive": False},
        "description": "Pillow/libjpeg-turbo, 4:2:0 chroma, baseline, standard Huffman tables",
    },
    "WebP": {
        "format": "WEBP",
        "qualities": [0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95],
        "options": {"method": 6},
        "description": "Pillow/libwebp lossy, method=6 (slowest, best), 4:2:0",
    },
    "AVIF": {
        "format": "AVIF",
        "qualities": [0, 10, 20, 30, 40, 50, 60, 70, 80, 90],
        "options": {"speed": 6, "subsampling": "4:2:0"},
        "description": "Pillow/libavif, Pillow defaults except quality: speed=6, 4:2:0",
    },
}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".ppm",
                  ".pgm", ".pnm", ".avif", ".gif", ".tga"}


class CodecUnavailable(RuntimeError):
    """A codec cannot be measured here (not installed, no weights, ...)."""


def _describe(exc: BaseException) -> str:
    """Exception type, message and the innermost source line, on one line."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}".replace("\n", " ")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- inputs ---------------------------------------------------------------------------------

def load_images(directory, limit: int | None = None,
                paths: list[Path] | None = None) -> list[tuple[str, Image.Image]]:
    """(name, RGB image) for every image file in ``directory``, sorted by name.

    EXIF orientation is applied and everything (palette, grey, 16-bit, CMYK,
    alpha, any size) is converted to 8-bit RGB, so each codec is handed the
    same pixels.  ``limit`` keeps the first N.  ``paths`` replaces the listing
    of ``directory`` (files anywhere below it, named by their path relative to
    it; see ``validation_split``).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise SystemExit(f"error: {directory} is not a directory")
    if paths is None:
        paths = [p for p in sorted(directory.iterdir())
                 if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")]
    images = []
    for path in paths:
        if limit is not None and len(images) >= limit:
            break
        try:
            name = Path(path).relative_to(directory).as_posix()
        except ValueError:
            name = Path(path).name
        try:
            with Image.open(path) as im:
                im = ImageOps.exif_transpose(im)
                images.append((name, im.convert("RGB")))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            _log(f"skipping {name}: {exc}")
    if not images:
        raise SystemExit(f"error: no readable images in {directory}")
    return images


def validation_split(directory, fraction: float = DEFAULT_VAL_FRACTION) -> tuple[list[Path], int]:
    """The held-out validation images of a training folder, chosen exactly as
    ``neuralcodec.train`` chooses them: ``list_images(directory)`` (recursive,
    training's suffixes, sorted) filtered by ``is_validation(path, fraction)``.
    Returns ``(validation paths, number of images training lists)``."""
    from neuralcodec.train import is_validation, list_images   # imports torch

    directory = Path(directory)
    if not directory.is_dir():
        raise SystemExit(f"error: {directory} is not a directory")
    paths = list_images(directory)
    return [p for p in paths if is_validation(p, fraction)], len(paths)


# -- measuring ------------------------------------------------------------------------------

Encoder = Callable[[Image.Image, float], bytes]
Decoder = Callable[[bytes], Image.Image]


def measure(name: str, encode: Encoder, decode: Decoder, images, qualities,
            progress: bool = True) -> list[dict]:
    """Per-image points of one codec: for each quality and image, encode,
    decode and measure.  Returns a list of dicts (quality, image, width,
    height, bytes, bpp, psnr, ms_ssim, enc_s, dec_s)."""
    points = []
    for quality in qualities:
        start = time.perf_counter()
        for image_name, image in images:
            original = np.asarray(image)
            t0 = time.perf_counter()
            data = encode(image, quality)
            t1 = time.perf_counter()
            decoded = decode(data)
            t2 = time.perf_counter()
            if decoded.size != image.size:
                raise RuntimeError(f"{name} q={quality:g} {image_name}: decoded size "
                                   f"{decoded.size} != original {image.size}")
            rec = np.asarray(decoded.convert("RGB") if decoded.mode != "RGB" else decoded)
            width, height = image.size
            if min(width, height) >= MIN_SIDE:
                ssim = ms_ssim(original, rec)
            else:
                ssim = math.nan
            points.append({
                "quality": quality, "image": image_name, "width": width, "height": height,
                "bytes": len(data), "bpp": 8.0 * len(data) / (width * height),
                "psnr": psnr(original, rec), "ms_ssim": ssim,
                "enc_s": t1 - t0, "dec_s": t2 - t1,
            })
        if progress:
            done = [p for p in points if p["quality"] == quality]
            _log(f"  {name:>10s} q={quality:<6g} {np.mean([p['bpp'] for p in done]):7.4f} bpp "
                 f"{np.mean([p['psnr'] for p in done]):6.2f} dB  "
                 f"({len(done)} images, {time.perf_counter() - start:.1f} s)")
    return points


def pillow_encoder(fmt: str, options: dict) -> Encoder:
    """encode(image, quality) -> bytes with Pillow's ``fmt`` and save options."""
    def encode(image: Image.Image, quality: float) -> bytes:
        buf = io.BytesIO()
        image.save(buf, fmt, quality=int(round(quality)), **options)
        return buf.getvalue()
    return encode


def pillow_decode(data: bytes) -> Image.Image:
    """Decode any Pillow-readable file to an RGB image."""
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im.convert("RGB") if im.mode != "RGB" else im.copy()


def measure_pillow(name: str, images, qualities=None, options: dict | None = None,
                   fmt: str | None = None, threads: int | None = None,
                   progress: bool = True) -> dict:
    """Sweep one Pillow codec (``name`` a key of BASELINES, or pass ``fmt``).

    Returns a codec record: name, kind, settings, per_image points and the
    averaged ``points`` (see ``summarize``).  ``threads`` caps AVIF's encoder
    threads (Pillow's default is every CPU).
    """
    spec = BASELINES.get(name, {})
    fmt = fmt or spec["format"]
    qualities = list(qualities if qualities is not None else spec["qualities"])
    options = dict(spec.get("options", {}) if options is None else options)
    if fmt == "AVIF" and threads:
        options.setdefault("max_threads", threads)
    if fmt == "AVIF" and not features.check("avif"):
        raise CodecUnavailable("this Pillow has no AVIF support")
    if fmt == "WEBP" and not features.check("webp"):
        raise CodecUnavailable("this Pillow has no WebP support")
    encode = pillow_encoder(fmt, options)
    pillow_decode(encode(images[0][1], qualities[len(qualities) // 2]))   # warm-up
    per_image = measure(name, encode, pillow_decode, images, qualities, progress)
    return {
        "name": name, "kind": "baseline",
        "settings": {"format": fmt, "qualities": qualities, "options": options,
                     "description": spec.get("description", "")},
        "per_image": per_image, "points": summarize(per_image),
    }


def ours_name(coder: str, effort: int, coders: int = 1) -> str:
    """Curve name of our codec: ``ours``, ``ours[coder]`` when several coders are
    measured, with `` effort=E`` appended for an encoder effort other than the
    default one."""
    name = "ours" if coders <= 1 else f"ours[{coder}]"
    return name if effort == DEFAULT_EFFORT else f"{name} effort={effort}"


def measure_ours(images, qualities=None, coder: str = "auto", name: str = "ours",
                 progress: bool = True, effort: int = DEFAULT_EFFORT) -> dict:
    """Sweep our codec (``neuralcodec.compress``/``decompress``) over qualities
    at encoder ``effort`` (0..3; see ``neuralcodec.refine``).

    Returns a codec record like ``measure_pillow``.  Raises CodecUnavailable
    when the codec fails on a warm-up image (for instance missing weights, or
    ``coder="constriction"`` without constriction installed).  That first
    compress/decompress, which loads the model, is not timed.
    """
    qualities = list(qualities if qualities is not None else DEFAULT_QUALITIES)

    def encode(image, quality):
        return neuralcodec.compress(image, quality=quality, coder=coder, effort=effort)

    try:
        neuralcodec.decompress(encode(images[0][1], 75))   # warm-up: loads the model
    except Exception as exc:  # noqa: BLE001 - any failure here means "not usable here"
        raise CodecUnavailable(f"the codec failed on a warm-up image: {_describe(exc)}") from exc
    per_image = measure(name, encode, neuralcodec.decompress, images, qualities, progress)
    from neuralcodec.codec import default_codec  # already loaded by the warm-up

    settings = {"qualities": qualities, "coder": coder, "effort": effort,
                "version": neuralcodec.__version__, "model_id": default_codec().model_id}
    return {"name": name, "kind": "ours", "settings": settings,
            "per_image": per_image, "points": summarize(per_image)}


def _mean(values: Iterable[float]) -> float:
    values = [v for v in values]
    return float(np.mean(values)) if values else math.nan


def summarize(per_image: list[dict]) -> list[dict]:
    """One averaged point per quality: mean bpp, mean PSNR (dB, of the
    per-image PSNRs), mean MS-SSIM (linear) and its dB value, mean encode
    and decode seconds per image."""
    qualities = sorted({p["quality"] for p in per_image})
    points = []
    for q in qualities:
        rows = [p for p in per_image if p["quality"] == q]
        ssim = _mean(p["ms_ssim"] for p in rows)
        points.append({
            "quality": q, "images": len(rows),
            "bpp": _mean(p["bpp"] for p in rows),
            "psnr": _mean(p["psnr"] for p in rows),
            "ms_ssim": ssim, "ms_ssim_db": msssim_db(ssim),
            "enc_s": _mean(p["enc_s"] for p in rows),
            "dec_s": _mean(p["dec_s"] for p in rows),
        })
    return points


# -- BD-rates -------------------------------------------------------------------------------

def _curve(record: dict, metric: str) -> tuple[list[float], list[float]]:
    key = "psnr" if metric == "psnr" else "ms_ssim_db"
    return [p["bpp"] for p in record["points"]], [p[key] for p in record["points"]]


def _bd(anchor: dict, test: dict, metric: str) -> dict:
    ra, qa = _curve(anchor, metric)
    rt, qt = _curve(test, metric)
    return bd_rate_result(ra, qa, rt, qt).as_dict()


def bd_rates(records: list[dict], anchors: list[str]) -> dict:
    """BD-rate (percent) of every record against every record named in
    ``anchors`` (itself excluded), in PSNR and in MS-SSIM dB:
    ``result[test][anchor][metric] -> {"bd_rate", "overlap", "note"}``."""
    by_name = {r["name"]: r for r in records}
    result: dict = {}
    for test in records:
        for anchor_name in anchors:
            if anchor_name == test["name"] or anchor_name not in by_name:
                continue
            result.setdefault(test["name"], {})[anchor_name] = {
                metric: _bd(by_name[anchor_name], test, metric) for metric in ("psnr", "ms_ssim")}
    return result


def effort_bd_rates(records: list[dict]) -> dict:
    """BD-rate of every curve of ours with effort > 0 against effort 0 of the
    same coder, in PSNR and in MS-SSIM dB: ``result[test][effort-0 name][metric]``
    (empty for a test whose effort-0 curve was not measured)."""
    ours = [r for r in records if r["kind"] == "ours"]
    result: dict = {}
    for test in ours:
        settings = test["settings"]
        if not settings.get("effort"):
            continue
        for base in ours:
            if (not base["settings"].get("effort")
                    and base["settings"].get("coder") == settings.get("coder")):
                result.setdefault(test["name"], {})[base["name"]] = {
                    metric: _bd(base, test, metric) for metric in ("psnr", "ms_ssim")}
    return result


def load_anchors(directory) -> list[dict]:
    """Published curves from ``*.json`` files holding ``{"name", "results":
    {"bpp", "psnr-rgb", "ms-ssim-rgb" | "ms-ssim-db-rgb"}}`` (CompressAI's
    format), as codec records of kind "anchor"."""
    records = []
    for path in sorted(Path(directory).glob("*.json")):
        try:
            doc = json.loads(path.read_text())
            res = doc["results"]
            bpp, db = res["bpp"], res["psnr-rgb"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            _log(f"skipping anchor {path.name}: {exc}")
            continue
        if "ms-ssim-rgb" in res:
            ssim_db = [msssim_db(v) for v in res["ms-ssim-rgb"]]
            ssim = list(res["ms-ssim-rgb"])
        elif "ms-ssim-db-rgb" in res:
            ssim_db = list(res["ms-ssim-db-rgb"])
            ssim = [1 - 10 ** (-v / 10) for v in ssim_db]
        else:
            ssim_db = ssim = [math.nan] * len(bpp)
        points = [{"bpp": float(b), "psnr": float(p), "ms_ssim": float(s),
                   "ms_ssim_db": float(d)} for b, p, s, d in zip(bpp, db, ssim, ssim_db)]
        points.sort(key=lambda p: p["bpp"])
        records.append({"name": str(doc.get("name") or path.stem), "kind": "anchor",
                        "settings": {"file": path.name, "description": doc.get("description", ""),
                                     "bpp_excludes_header": True},
                        "points": points})
    return records


def anchor_bd_rates(records: list[dict], anchors: list[dict]) -> dict:
    """BD-rate of every measured record against every anchor:
    ``result[test][anchor][metric]``."""
    result: dict = {}
    for test in records:
        for anchor in anchors:
            result.setdefault(test["name"], {})[anchor["name"]] = {
                metric: _bd(anchor, test, metric) for metric in ("psnr", "ms_ssim")}
    return result


# -- reporting ------------------------------------------------------------------------------

def _library_versions() -> dict:
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    try:
        import PIL
        versions["pillow"] = PIL.__version__
        versions["libjpeg-turbo"] = features.version("libjpeg_turbo")
        versions["libwebp"] = features.version("webp")
        versions["libavif"] = features.version("avif")
        from PIL import _avif  # private, informative only
        versions["avif_codecs"] = _avif.codec_versions()
    except Exception:  # noqa: BLE001 - informative only
        pass
    try:
        import torch
        versions["torch"] = torch.__version__
        versions["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return versions


def _git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True,
                             text=True, timeout=10, cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict:
    """Library versions, thread count, CPU and git revision, for the JSON."""
    return {"versions": _library_versions(), "git": _git_revision(),
            "machine": platform.machine(), "processor": platform.processor(),
            "cpus": os.cpu_count()}


def _number(value) -> float:
    """A float from a point value, also as read back from rd.json (None, "inf")."""
    try:
        return math.nan if value is None else float(value)
    except (TypeError, ValueError):
        return math.nan


def _fmt(value, spec: str = ".2f", suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:{spec}}{suffix}"


def _bd_cell(entry: dict | None, explain: bool = False) -> str:
    """``+12.3%`` (``*`` when the overlap is short); ``—`` when there is no
    BD-rate, followed by the reason with ``explain``."""
    if not entry or entry.get("bd_rate") is None:
        note = (entry or {}).get("note") if explain else ""
        return f"— ({note})" if note else "—"
    mark = "*" if entry.get("note") else ""
    return f"{entry['bd_rate']:+.1f}%{mark}"


def _selection_line(results: dict) -> str | None:
    """The report's warning line for a validation split (None for a plain folder)."""
    sel = results.get("selection") or {}
    if sel.get("kind") != "validation-split":
        return None
    fraction = sel["val_fraction"]
    used = len(results["images"])
    if used == sel["selected"]:
        count = f"{used} of the {sel['total']} images"
    else:
        count = (f"the first {used} (--limit) of the {sel['selected']} validation images "
                 f"among the {sel['total']} images")
    if fraction == DEFAULT_VAL_FRACTION:
        held = f"fraction {fraction:g}, the training default: never trained on"
    else:
        held = (f"fraction {fraction:g}; training's default is {DEFAULT_VAL_FRACTION:g}, so these "
                f"were never trained on only if training ran with --val-fraction {fraction:g}")
    return (f"**Validation split of a training folder, not Kodak:** {count} under "
            f"`{results['directory']}`, held out exactly as training holds them out "
            f"(`neuralcodec.train.is_validation`, {held}).")


def report(results: dict) -> str:
    """The Markdown report of a ``run`` result."""
    lines = [f"$ {results['command']}", ""]
    images = results["images"]
    selection = _selection_line(results)
    if selection:
        lines += [selection, ""]
    lines.append(f"{len(images)} images from `{results['directory']}`; "
                 f"git {results['environment'].get('git')}; "
                 f"Pillow {results['environment']['versions'].get('pillow')}.")
    lines.append("")
    records = results["codecs"]
    measured = [r for r in records if r["kind"] != "anchor"]
    baselines = [r["name"] for r in measured if r["kind"] == "baseline"]

    lines.append("## Codecs")
    lines.append("")
    lines.append("| codec | settings | points | bpp range | PSNR range (dB) | enc s/img | dec s/img |")
    lines.append("|---|---|---|---|---|---|---|")
    for r in measured:
        pts = r["points"]
        s = r["settings"]
        effort = f", effort={s['effort']}" if s.get("effort") is not None else ""
        desc = (s.get("description")
                or f"coder={s.get('coder')}{effort}, model {s.get('model_id', '?')}")
        lines.append(
            f"| {r['name']} | {desc} | {len(pts)} | "
            f"{min(p['bpp'] for p in pts):.3f}–{max(p['bpp'] for p in pts):.3f} | "
            f"{min(p['psnr'] for p in pts):.2f}–{max(p['psnr'] for p in pts):.2f} | "
            f"{_fmt(_mean(p['enc_s'] for p in pts), '.3f')} | "
            f"{_fmt(_mean(p['dec_s'] for p in pts), '.3f')} |")
    lines.append("")

    if baselines:
        lines.append("## BD-rate (negative: fewer bits than the column codec at equal quality)")
        lines.append("")
        header = "| codec | " + " | ".join(f"vs {b} (PSNR) | vs {b} (MS-SSIM)" for b in baselines) + " |"
        lines.append(header)
        lines.append("|---" * (1 + 2 * len(baselines)) + "|")
        for r in measured:
            cells = []
            for b in baselines:
                entry = results["bd_rate"].get(r["name"], {}).get(b)
                cells += [_bd_cell(entry and entry["psnr"]), _bd_cell(entry and entry["ms_ssim"])]
            lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
        lines.append("")
        lines.append("PCHIP of log-rate over the overlapping quality range; MS-SSIM columns use "
                     "MS-SSIM in dB as the quality axis. `*`: overlap covers under half of a curve.")
        lines.append("")

    # curves with refinement passes that have an effort-0 curve of their coder to compare with
    efforts = [r for r in measured if r["kind"] == "ours" and r["settings"].get("effort")
               and results.get("effort_bd_rate", {}).get(r["name"])]
    if efforts:
        by_name = {r["name"]: r for r in measured}
        lines.append("## Encoder effort: BD-rate against effort 0 (same decoder; negative: "
                     "smaller files at equal quality)")
        lines.append("")
        lines.append("| curve | against | BD-rate (PSNR) | BD-rate (MS-SSIM) | enc s/img | "
                     "enc time vs effort 0 | dec s/img |")
        lines.append("|---|---|---|---|---|---|---|")
        for r in efforts:
            against = results["effort_bd_rate"][r["name"]]
            enc = _mean(p["enc_s"] for p in r["points"])
            dec = _mean(p["dec_s"] for p in r["points"])
            for base_name, entry in against.items():
                base_enc = _mean(p["enc_s"] for p in by_name[base_name]["points"])
                ratio = enc / base_enc if base_enc > 0 else math.nan
                lines.append(f"| {r['name']} | {base_name} | {_bd_cell(entry['psnr'], True)} | "
                             f"{_bd_cell(entry['ms_ssim'], True)} | {_fmt(enc, '.3f')} | "
                             f"{_fmt(ratio, '.1f', '×')} | {_fmt(dec, '.3f')} |")
        lines.append("")
        lines.append("Same qualities, same file format and decoder; only the encoder's choice of "
                     "symbols differs (`neuralcodec/refine.py`). `*`: overlap covers under half "
                     "of a curve.")
        lines.append("")

    anchors = [r for r in records if r["kind"] == "anchor"]
    if anchors:
        ours = [r["name"] for r in measured if r["kind"] == "ours"]
        shown = ours or [r["name"] for r in measured]
        lines.append("## BD-rate against published Kodak curves (negative: we need fewer bits)")
        lines.append("")
        cols = []
        for name in shown:
            cols += [f"{name} (PSNR)", f"{name} (MS-SSIM)"]
        lines.append("| anchor | bpp range | " + " | ".join(cols) + " |")
        lines.append("|---" * (2 + len(cols)) + "|")
        for a in anchors:
            pts = a["points"]
            cells = []
            for name in shown:
                entry = results["anchor_bd_rate"].get(name, {}).get(a["name"], {})
                cells += [_bd_cell(entry.get("psnr")), _bd_cell(entry.get("ms_ssim"))]
            lines.append(f"| {a['name']} | {min(p['bpp'] for p in pts):.3f}–"
                         f"{max(p['bpp'] for p in pts):.3f} | " + " | ".join(cells) + " |")
        lines.append("")
        lines.append("Anchor bpp counts only the entropy-coded payload (no header); ours counts "
                     "the whole file, so these BD-rates are slightly pessimistic for us. Anchors "
                     "are averages over all 24 Kodak images: compare only when DIR is that set.")
        if not ours:
            lines.append("Our codec was not measured; the columns show the Pillow baselines.")
        lines.append("")

    for r in measured:
        if r["kind"] != "ours":
            continue
        lines.append(f"## {r['name']}: per-quality points (mean over {len(images)} images)")
        lines.append("")
        lines.append("| quality | bpp | PSNR (dB) | MS-SSIM | MS-SSIM (dB) | enc s | dec s |")
        lines.append("|---|---|---|---|---|---|---|")
        for p in r["points"]:
            lines.append(f"| {p['quality']:g} | {p['bpp']:.4f} | {_fmt(p['psnr'])} | "
                         f"{_fmt(p['ms_ssim'], '.5f')} | {_fmt(p['ms_ssim_db'])} | "
                         f"{p['enc_s']:.3f} | {p['dec_s']:.3f} |")
        lines.append("")
    for note in results.get("notes", []):
        lines.append(f"Note: {note}")
    return "\n".join(lines).rstrip() + "\n"


def plot(results: dict, path, max_bpp: float = 2.0) -> bool:
    """PSNR and MS-SSIM (dB) against bpp for every curve (anchors dashed).
    Returns False, with a note on stderr, when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _log("note: matplotlib is not installed (pip install matplotlib); no plot written, "
             "the table and rd.json are complete without it")
        return False
    fig, axes = plt.subplots(1, 2, figsize=(14, 6))
    measured_colours = iter(plt.get_cmap("tab10").colors)
    anchor_colours = iter(plt.get_cmap("tab20b").colors + plt.get_cmap("tab20c").colors)
    visible = {"psnr": [], "ms_ssim_db": []}
    for record in results["codecs"]:
        pts = sorted(record["points"], key=lambda p: p["bpp"])
        x = [p["bpp"] for p in pts]
        if record["kind"] == "anchor":
            label = f"{record['name']} (published)"
            style = {"linestyle": "--", "linewidth": 1.0, "color": next(anchor_colours)}
        else:
            label = record["name"]
            refined = (record["kind"] == "ours"
                       and record["settings"].get("effort", DEFAULT_EFFORT) != DEFAULT_EFFORT)
            style = {"linestyle": "-", "marker": "s" if refined else "o", "markersize": 3.5,
                     "linewidth": 2.4 if record["kind"] == "ours" else 1.6,
                     "color": next(measured_colours), "zorder": 3}
        for ax, key in zip(axes, ("psnr", "ms_ssim_db")):
            y = [_number(p.get(key)) for p in pts]
            if all(not math.isfinite(v) for v in y):
                continue
            visible[key] += [v for b, v in zip(x, y) if b <= max_bpp and math.isfinite(v)]
            ax.plot(x, y, label=label if ax is axes[0] else None, **style)
    for ax, key, label in zip(axes, ("psnr", "ms_ssim_db"), ("PSNR RGB (dB)", "MS-SSIM RGB (dB)")):
        ax.set_xlim(0, max_bpp)
        if visible[key]:
            lo, hi = min(visible[key]), max(visible[key])
            ax.set_ylim(lo - 0.03 * (hi - lo), hi + 0.03 * (hi - lo))
        ax.set_xlabel("bits per pixel (ours and Pillow: whole file)")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    fig.legend(loc="center right", fontsize=7.5, frameon=False)
    source = Path(results["directory"]).name
    if (results.get("selection") or {}).get("kind") == "validation-split":
        source = f"the validation split of training folder {source} (not Kodak)"
    fig.suptitle(f"{len(results['images'])} images from {source}: "
                 "measured (solid), published curves (dashed, bpp without headers)")
    fig.tight_layout(rect=(0, 0, 0.84, 1))
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return True


# -- command line ---------------------------------------------------------------------------

def _parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, description=__doc__.split("\n\n")[0],
        epilog="Give DIR before options that take several values (--qualities, --coder, "
               "--effort, --baselines, --*-qualities).")
    p.add_argument("directory",
                   help="folder of test images (e.g. the 24 Kodak PNGs); with "
                        "--validation-split, a training folder")
    p.add_argument("--out", default="results", help="output folder (default: results/)")
    p.add_argument("--qualities", type=float, nargs="+", default=DEFAULT_QUALITIES,
                   help="our quality settings, floats in 1..100")
    p.add_argument("--coder", nargs="+", default=["auto"],
                   help="entropy coder(s) for our codec; several give one curve each")
    p.add_argument("--effort", type=int, nargs="+", default=[DEFAULT_EFFORT], choices=EFFORTS,
                   metavar="E",
                   help=f"encoder effort(s) 0-3 for our codec (default: {DEFAULT_EFFORT}, the "
                        f"codec's); each gives its own curve, 'ours' for {DEFAULT_EFFORT} and "
                        f"'ours effort=E' otherwise, plus a BD-rate against effort 0 when 0 is "
                        f"among them. Higher: slower encode, smaller files, same decoder")
    p.add_argument("--no-ours", action="store_true", help="measure only the baselines")
    p.add_argument("--baselines", nargs="*", default=["jpeg", "webp", "avif"],
                   choices=["jpeg", "webp", "avif"], help="Pillow codecs to run (none: no value)")
    p.add_argument("--jpeg-qualities", type=int, nargs="+")
    p.add_argument("--webp-qualities", type=int, nargs="+")
    p.add_argument("--avif-qualities", type=int, nargs="+")
    p.add_argument("--webp-method", type=int, default=6, help="libwebp method 0-6 (default 6)")
    p.add_argument("--avif-speed", type=int, default=6, help="libavif speed 0-10 (default 6, Pillow's)")
    p.add_argument("--anchors", metavar="DIR", help="folder of published curves (*.json)")
    p.add_argument("--limit", type=int, help="use only the first N images")
    p.add_argument("--validation-split", action="store_true",
                   help="DIR is a training folder: use only its held-out validation images, "
                        "chosen exactly as neuralcodec.train does (recursive listing, "
                        "is_validation(name, --val-fraction)); the report says so first")
    p.add_argument("--val-fraction", type=float, default=DEFAULT_VAL_FRACTION,
                   help=f"validation fraction for --validation-split (default "
                        f"{DEFAULT_VAL_FRACTION:g}, neuralcodec.train's default)")
    p.add_argument("--threads", type=int,
                   help="torch threads and AVIF encoder threads (default: library defaults)")
    p.add_argument("--plot", action="store_true", help="also write rd.png (needs matplotlib)")
    p.add_argument("--plot-max-bpp", type=float, default=2.0)
    p.add_argument("--quiet", action="store_true", help="no per-quality progress on stderr")
    return p


def run(args: argparse.Namespace, command: str) -> dict:
    """Measure everything ``args`` asks for; returns the full result dict
    (also what ``rd.json`` holds)."""
    set_threads(args.threads)
    efforts = list(dict.fromkeys(getattr(args, "effort", None) or [DEFAULT_EFFORT]))
    split = getattr(args, "validation_split", False)
    fraction = getattr(args, "val_fraction", DEFAULT_VAL_FRACTION)
    if split:
        if not 0 < fraction < 1:
            raise SystemExit(f"error: --val-fraction must be between 0 and 1, got {fraction:g}")
        paths, total = validation_split(args.directory, fraction)
        if not paths:
            raise SystemExit(f"error: none of the {total} training images under "
                             f"{args.directory} is in the validation split at fraction "
                             f"{fraction:g}")
        _log(f"validation split of {args.directory}: {len(paths)} of {total} images")
        images = load_images(args.directory, args.limit, paths=paths)
        selection = {"kind": "validation-split", "val_fraction": fraction,
                     "selected": len(paths), "total": total,
                     "rule": "neuralcodec.train.list_images(DIR) filtered by "
                             "neuralcodec.train.is_validation(path, val_fraction)"}
    else:
        images = load_images(args.directory, args.limit)
        selection = {"kind": "directory"}
    progress = not args.quiet
    notes: list[str] = []
    records: list[dict] = []

    if not args.no_ours:
        for coder in args.coder:
            for effort in efforts:
                name = ours_name(coder, effort, len(args.coder))
                _log(f"{name}: {len(args.qualities)} qualities x {len(images)} images")
                try:
                    records.append(measure_ours(images, args.qualities, coder=coder, name=name,
                                                progress=progress, effort=effort))
                except CodecUnavailable as exc:
                    _log(f"skipping {name}: {exc}")
                    notes.append(f"{name} was skipped: {exc}")

    sweeps = {"jpeg": ("JPEG", args.jpeg_qualities, None),
              "webp": ("WebP", args.webp_qualities, {"method": args.webp_method}),
              "avif": ("AVIF", args.avif_qualities,
                       {"speed": args.avif_speed, "subsampling": "4:2:0"})}
    for key in ("jpeg", "webp", "avif"):
        if key not in args.baselines:
            continue
        name, qualities, options = sweeps[key]
        count = len(qualities or BASELINES[name]["qualities"])
        _log(f"{name}: {count} qualities x {len(images)} images")
        try:
            records.append(measure_pillow(name, images, qualities, options,
                                          threads=args.threads, progress=progress))
        except CodecUnavailable as exc:
            _log(f"skipping {name}: {exc}")
            notes.append(f"{name} was skipped: {exc}")

    if any(min(im.size) < MIN_SIDE for _, im in images):
        notes.append(f"5-scale MS-SSIM needs sides of at least {MIN_SIDE} px; smaller images "
                     "make the MS-SSIM averages NaN and the MS-SSIM BD-rates —")

    baseline_names = [r["name"] for r in records if r["kind"] == "baseline"]
    anchors = load_anchors(args.anchors) if args.anchors else []
    if anchors and split:
        notes.append("anchors are published Kodak curves; this run measured a training folder's "
                     "validation split, so BD-rates against them compare different images")
    elif anchors and (len(images) != 24 or args.limit):
        notes.append(f"anchors were measured on all 24 Kodak images; this run used "
                     f"{len(images)}, so BD-rates against them are indicative only")
    results = {
        "command": command, "directory": str(Path(args.directory).resolve()),
        "selection": selection, "efforts": efforts,
        "images": [{"name": n, "width": im.size[0], "height": im.size[1]} for n, im in images],
        "environment": environment(),
        "conventions": {
            "bpp": "8*len(file)/(W*H), whole file including headers (anchors: payload only)",
            "psnr": "RGB, 8-bit, per image, then mean over images per operating point",
            "ms_ssim": "RGB 5-scale MS-SSIM per image, mean of linear values per point; "
                       "ms_ssim_db = -10*log10(1 - mean)",
            "bd_rate": "percent, PCHIP of ln(rate) over quality, overlapping range; "
                       "negative = test needs fewer bits",
        },
        "codecs": records + anchors,
        "bd_rate": bd_rates(records, baseline_names),
        "effort_bd_rate": effort_bd_rates(records),
        "anchor_bd_rate": anchor_bd_rates(records, anchors) if anchors else {},
        "notes": notes,
    }
    return results


def _json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    return obj


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Command-line entry point; ``argv`` without the program name."""
    args, command = start_command(_parser, argv, prog, "benchmarks.rd")
    results = run(args, command)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = report(results)
    (out / "rd.json").write_text(json.dumps(_json_safe(results), indent=1) + "\n")
    (out / "rd.md").write_text(text)
    print(text.split("\n", 2)[2] if text.startswith("$ ") else text, end="")
    written = [out / "rd.json", out / "rd.md"]
    if args.plot and plot(results, out / "rd.png", args.plot_max_bpp):
        written.append(out / "rd.png")
    print("\nWrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
