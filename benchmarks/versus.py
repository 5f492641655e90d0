"""Two versions of vaez timed side by side, in one process, in turns.

The development machine's speed drifts by a third within minutes, so two `speed.py` runs made
minutes apart cannot tell a 10% change from the drift. Here both versions' codecs are loaded
into one process (this checkout's and another checkout's, e.g. a `git worktree` of an older
commit) and their warm decode and encode of the same image alternate, call by call: both see
the same machine. Each decodes its own file of the image (the versions may ship different
weights; the same architecture costs the same).

    git worktree add /tmp/v12 e31f1d4
    python benchmarks/versus.py /tmp/v12 [IMAGE] [--repeat 15] [--quality 75]

Prints the median and best time of each, and the median per stage (``Codec.timings``).
Importing `neuralcodec` first sets its thread settings (`neuralcodec.THREAD_SETTINGS`) before
NumPy loads, as the ``vaez`` command does.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_codec(root: Path):
    """A `Codec` with the default weights of the checkout at ``root`` (its own modules)."""
    for name in [n for n in sys.modules if n.split(".")[0] in ("neuralcodec", "formats")]:
        del sys.modules[name]
    sys.path.insert(0, str(root))
    try:
        import neuralcodec

        return neuralcodec.Codec(), neuralcodec.__version__
    finally:
        sys.path.remove(str(root))


def race(calls: dict, repeat: int) -> dict:
    """``calls``: name -> (function, codec). Runs them in turns (order alternating) ``repeat``
    times; returns name -> {"times": [...], "stages": {stage: [...]}}."""
    results = {name: {"times": [], "stages": {}} for name in calls}
    names = list(calls)
    for i in range(repeat):
        for name in (names if i % 2 == 0 else names[::-1]):
            work, codec = calls[name]
            start = time.perf_counter()
            work()
            results[name]["times"].append(time.perf_counter() - start)
            for stage, seconds in codec.timings.items():
                results[name]["stages"].setdefault(stage, []).append(seconds)
    return results


def _line(name: str, result: dict) -> str:
    times = result["times"]
    stages = ", ".join(f"{k} {statistics.median(v) * 1e3:.1f}" for k, v in result["stages"].items())
    return (f"| {name} | {statistics.median(times) * 1e3:.1f} | {min(times) * 1e3:.1f} | {stages} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("other", type=Path, help="another checkout of vaez (repository root)")
    ap.add_argument("image", nargs="?", default=str(ROOT.parent / "shared/data/kodak/kodim23.png"))
    ap.add_argument("--repeat", type=int, default=15, help="calls per version and direction")
    ap.add_argument("--quality", type=float, default=75)
    args = ap.parse_args(argv)
    if not (args.other / "neuralcodec" / "__init__.py").is_file():
        print(f"error: {args.other} is not a vaez checkout", file=sys.stderr)
        return 2
    if args.repeat < 1:
        print("error: --repeat must be at least 1", file=sys.stderr)
        return 2
    other, other_version = load_codec(args.other.resolve())
    this, this_version = load_codec(ROOT)
    from PIL import Image

    with Image.open(args.image) as im:
        image = im.convert("RGB")
    names = (f"other ({other_version}, {args.other})", f"this ({this_version})")
    files = {name: codec.compress(image, quality=args.quality)
             for name, codec in zip(names, (other, this))}
    for name, codec in zip(names, (other, this)):      # warm-up
        codec.decompress(files[name])
    print(f"$ python benchmarks/versus.py {' '.join(sys.argv[1:] if argv is None else argv)}\n")
    for direction in ("decode", "encode"):
        calls = {}
        for name, codec in zip(names, (other, this)):
            if direction == "decode":
                calls[name] = (lambda c=codec, d=files[name]: c.decompress(d), codec)
            else:
                calls[name] = (lambda c=codec: c.compress(image, quality=args.quality), codec)
        results = race(calls, args.repeat)
        print(f"## {direction} ({args.repeat} calls each, in turns; ms)\n")
        print("| version | median | best | median per stage |\n|---|---|---|---|")
        for name in names:
            print(_line(name, results[name]))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
