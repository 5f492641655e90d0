"""Rate control: pick the quality that hits a file size, a bit rate or a PSNR.

One job: turn "at most 50 KB" or "at least 38 dB" into a quality setting, because users think in
bytes and decibels while the codec only knows its 1..100 quality scale. File size and PSNR both
grow with quality, so a bracketing search over the quality scale (in hundredths, what the header
stores) finds the setting with a handful of encodes: it interpolates between the two ends of the
bracket (log size, or PSNR, against quality) and falls back to bisection whenever the same end
moves twice in a row, which keeps the number of steps bounded even where the curve is kinked.

Guarantees:

* size and bpp targets: the file is never larger than asked, and within ``SIZE_TOLERANCE``
  (5 %) below it unless quality 100 is smaller still (the result's ``note`` says so); a target
  below what quality 1 gives raises ``ValueError`` naming the smallest reachable size.
* PSNR target: the result has PSNR >= target and is the lowest quality found with that property,
  within ``PSNR_TOLERANCE`` (0.1 dB) of the target; if even quality 100 falls short, the quality
  100 file is returned with ``met`` false and a ``note``.

The codec object is passed in, so this module never imports torch itself.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

import formats

from .efforts import DEFAULT_EFFORT

__all__ = ["Encoded", "encode", "prepare", "parse_size", "psnr",
           "SIZE_TOLERANCE", "PSNR_TOLERANCE", "MAX_ENCODES"]

SIZE_TOLERANCE = 0.05   # a size target is met when the file is within 5 % below it
PSNR_TOLERANCE = 0.1    # dB above a PSNR target that still counts as "the fewest bytes"
MAX_ENCODES = 10        # hard cap per search (typically 4-7 are needed)
_LOW, _HIGH = 100, 10000  # quality 1 and 100 in hundredths

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3,
          "gb": 1000**3, "kib": 1024, "mib": 1024**2, "gib": 1024**3}
_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Encoded:
    """A compressed image and what it reached."""

    data: bytes              # the .vaez file
    quality: float           # the quality it was encoded at
    size: int                # len(data) in bytes
    bpp: float               # 8 * size / (width * height), whole file
    psnr: float              # RGB (or grey) PSNR in dB against the input pixels; inf if exact
    width: int
    height: int
    target: str | None = None        # "size", "bpp", "psnr" or None (plain quality)
    goal: float | None = None        # the number asked for (bytes, bpp or dB)
    met: bool = True                 # the target's hard side holds (size <= goal / psnr >= goal)
    encodes: int = 1                 # how many times the codec was run
    note: str | None = None          # why the result is not as close to the goal as promised


def parse_size(value) -> int:
    """A byte count from an int or a string such as ``"50KB"``, ``"1.5MB"``, ``"800B"``,
    ``"64KiB"`` (KB/MB/GB are powers of 1000, KiB/MiB/GiB powers of 1024; case-insensitive)."""
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, (int, np.integer)):
        number = int(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"not a size: {value!r}")
        number = int(value)
    elif isinstance(value, str):
        match = _SIZE_RE.match(value)
        unit = match and match.group(2).lower()
        if not match or unit not in _UNITS:
            raise ValueError(f"not a size: {value!r} (examples: 50KB, 1.5MB, 800B, 64KiB)")
        amount = float(match.group(1)) * _UNITS[unit]
        if not math.isfinite(amount):
            raise ValueError(f"not a size: {value!r} (too large)")
        number = int(amount)
    else:
        raise ValueError(f"not a size: {value!r}")
    if number < 1:
        raise ValueError(f"size must be at least 1 byte, got {value!r}")
    return number


def prepare(image, strip: bool = False):
    """Load ``image`` once into a metadata-carrying PIL image the codec can re-read cheaply.

    With ``strip`` the ICC profile and EXIF are left out. Orientation is already applied.
    Returns ``(pil_image, loaded)`` where ``loaded`` is the ``formats.LoadedImage``.
    """
    loaded = formats.load_image(image)
    pil = formats.to_pil(loaded.pixels, loaded.alpha, loaded.mode,
                         None if strip else loaded.icc_profile, None if strip else loaded.exif)
    return pil, loaded


def psnr(reference: np.ndarray, decoded) -> float:
    """PSNR in dB of the colour (or grey) channels of ``decoded`` against ``reference``."""
    got = np.asarray(decoded)
    if got.ndim == 3 and reference.ndim == 3:
        got = got[..., :reference.shape[2]]
    elif got.ndim == 3:
        got = got[..., 0]
    mse = float(np.mean((reference.astype(np.float64) - got.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


@dataclass
class _Point:
    centi: int
    data: bytes
    psnr: float | None = None

    @property
    def size(self) -> int:
        return len(self.data)


def _check_number(name: str, value, positive: bool = True) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number) or (positive and number <= 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return number


def encode(codec, image, quality: float = 75, coder: str = "auto", target_size=None,
           target_bpp=None, target_psnr=None, strip: bool = False,
           max_encodes: int = MAX_ENCODES, effort: int = DEFAULT_EFFORT) -> Encoded:
    """Compress ``image`` with ``codec`` at ``quality`` or, if one target is given, at the
    quality that meets it (``quality`` is then ignored). See the module docstring."""
    given = {k: v for k, v in (("target_size", target_size), ("target_bpp", target_bpp),
                                ("target_psnr", target_psnr)) if v is not None}
    if len(given) > 1:
        raise ValueError(f"give at most one target, not {' and '.join(given)}")
    if target_size is not None:
        target_size = parse_size(target_size)
    if target_bpp is not None:
        target_bpp = _check_number("target_bpp", target_bpp)
    if target_psnr is not None:
        target_psnr = _check_number("target_psnr", target_psnr)
    if max_encodes < 3:
        raise ValueError("max_encodes must be at least 3")

    source, loaded = prepare(image, strip)
    width, height = loaded.width, loaded.height
    reference = loaded.pixels
    count = 0

    def measure(centi: int, with_psnr: bool = False) -> _Point:
        nonlocal count
        count += 1
        point = _Point(centi, codec.compress(source, quality=centi / 100, coder=coder, effort=effort))
        if with_psnr:
            point.psnr = psnr(reference, codec.decompress(point.data))
        return point

    def result(point: _Point, target=None, goal=None, met=True, note=None) -> Encoded:
        if point.psnr is None:
            point.psnr = psnr(reference, codec.decompress(point.data))
        return Encoded(data=point.data, quality=point.centi / 100, size=point.size,
                       bpp=8 * point.size / (width * height), psnr=point.psnr, width=width,
                       height=height, target=target, goal=goal, met=met, encodes=count, note=note)

    if target_psnr is not None:
        return _search_psnr(measure, result, target_psnr, max_encodes)
    if target_size is not None or target_bpp is not None:
        if target_bpp is not None:
            limit, target, goal = int(target_bpp * width * height / 8), "bpp", target_bpp
        else:
            limit, target, goal = target_size, "size", target_size
        return _search_size(measure, result, limit, target, goal, width * height, max_encodes)
    quality = float(quality)
    if not 1.0 <= quality <= 100.0:
        raise ValueError(f"quality must be between 1 and 100, got {quality:g}")
    return result(measure(round(quality * 100)))


def _narrow(measure, lo: _Point, hi: _Point, value, goal: float, is_low, done,
            budget: int, with_psnr: bool) -> list[_Point]:
    """Shrink the bracket [lo, hi] (``is_low(lo)`` true, ``is_low(hi)`` false) towards where
    ``value`` crosses ``goal``; stops at a point that is ``done``, at adjacent hundredths, or
    when ``budget`` encodes are used. Returns the points measured."""
    points: list[_Point] = []
    last_side, repeats = None, 0
    while hi.centi - lo.centi > 1 and budget > 0:
        low_value, high_value = value(lo), value(hi)
        if repeats >= 2 or not high_value > low_value:
            centi = (lo.centi + hi.centi) // 2
        else:
            t = (goal - low_value) / (high_value - low_value)
            centi = lo.centi + round(t * (hi.centi - lo.centi))
        centi = min(max(centi, lo.centi + 1), hi.centi - 1)
        point = measure(centi, with_psnr)
        budget -= 1
        points.append(point)
        if done(point):
            break
        side = is_low(point)
        if side:
            lo = point
        else:
            hi = point
        repeats = repeats + 1 if side == last_side else 1
        last_side = side
    return points


def _search_size(measure, result, limit: int, target: str, goal: float, pixels: int,
                 max_encodes: int) -> Encoded:
    floor = (1 - SIZE_TOLERANCE) * limit

    def done(p):
        return floor <= p.size <= limit

    lowest = measure(_LOW)
    if lowest.size > limit:
        asked = (f"{goal:g} bpp ({limit} bytes)" if target == "bpp" else f"{limit} bytes")
        raise ValueError(
            f"cannot compress this image to {asked}: the smallest file it can have is "
            f"{lowest.size} bytes ({8 * lowest.size / pixels:.3f} bpp, quality 1)")
    if done(lowest):
        return result(lowest, target, goal)
    highest = measure(_HIGH)
    if highest.size <= limit:
        note = None if done(highest) else (
            f"even quality 100 gives only {highest.size} bytes "
            f"({100 * highest.size / limit:.0f}% of the {limit} asked)")
        return result(highest, target, goal, note=note)
    points = [lowest, highest] + _narrow(
        measure, lowest, highest, value=lambda p: math.log(p.size),
        goal=math.log((1 - SIZE_TOLERANCE / 2) * limit), is_low=lambda p: p.size <= limit,
        done=done, budget=max_encodes - 2, with_psnr=False)
    best = max((p for p in points if p.size <= limit), key=lambda p: (p.size, -p.centi))
    note = None
    if not done(best):
        stepped = any(p.centi == best.centi + 1 and p.size > limit for p in points)
        why = ("the next quality step is larger than asked" if stepped
               else f"search stopped after {len(points)} encodes")
        note = (f"closest below the target is {best.size} bytes "
                f"({100 * best.size / limit:.1f}% of {limit}); {why}")
    return result(best, target, goal, note=note)


def _search_psnr(measure, result, goal: float, max_encodes: int) -> Encoded:
    def done(p):
        return goal <= p.psnr <= goal + PSNR_TOLERANCE

    highest = measure(_HIGH, True)
    if highest.psnr < goal:
        return result(highest, "psnr", goal, met=False, note=(
            f"PSNR {goal:g} dB is out of reach: quality 100 gives {highest.psnr:.2f} dB"))
    if done(highest):
        return result(highest, "psnr", goal)
    lowest = measure(_LOW, True)
    if lowest.psnr >= goal:
        return result(lowest, "psnr", goal)
    points = [lowest, highest] + _narrow(
        measure, lowest, highest, value=lambda p: p.psnr, goal=goal + PSNR_TOLERANCE / 2,
        is_low=lambda p: p.psnr < goal, done=done, budget=max_encodes - 2, with_psnr=True)
    best = min((p for p in points if p.psnr >= goal), key=lambda p: (p.size, p.centi))
    note = None
    if not done(best):
        stepped = any(p.centi == best.centi - 1 and p.psnr < goal for p in points)
        why = ("the quality step below it falls short" if stepped
               else f"search stopped after {len(points)} encodes")
        note = f"reached {best.psnr:.2f} dB for a {goal:g} dB target; {why}"
    return result(best, "psnr", goal, note=note)
