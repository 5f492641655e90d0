"""The ``vaez`` command line: compress images to ``.vaez``, decompress them, inspect files.

Commands: ``compress`` (files or a whole folder tree; a quality, or a size / bpp / PSNR
target), ``decompress`` (files or a folder tree), ``info`` (header and metadata), ``inspect``
(a diagnostic figure, needs matplotlib) and ``bench`` (``benchmarks/rd.py``). Only the
commands that code pixels load the model (and torch, to encode: decoding is NumPy only);
``--help``, ``--version`` and ``info`` stay light. Every output is written atomically by ``formats.atomic_write`` (a temporary file
in the target directory, then a rename), an existing file is only replaced with ``--force``
(or, for a folder input, when it is older than its input), and the inputs are never written
to. Errors are reported as one line ``vaez: error: <file>: <message>``; exit status 0 on
success, 1 when any file failed, 2 for usage errors and 130 when interrupted.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import json
import math
import os
import shutil
import stat
import sys

# Before NumPy or torch load (imported lazily below): keep the two libraries' thread pools
# from spinning against each other (see neuralcodec.THREAD_SETTINGS, which this mirrors).
for _name, _value in (("OPENBLAS_THREAD_TIMEOUT", "4"), ("OMP_WAIT_POLICY", "PASSIVE")):
    os.environ.setdefault(_name, _value)

PROG = "vaez"
# neuralcodec.efforts' levels, mirrored so that --help imports neither NumPy nor Pillow (a
# test checks that the two agree)
EFFORTS, DEFAULT_EFFORT = (0, 1, 2, 3), 1
VAEZ_SUFFIX = ".vaez"
STDIO = "-"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

EXAMPLES = """\
examples:
  vaez compress photo.png                 writes photo.vaez next to photo.png
  vaez compress -q 50 a.png b.jpg -o out/ several inputs into the directory out/
  vaez compress photo.png --coder huffman -o small.vaez
  vaez decompress photo.vaez              writes photo.png
  vaez decompress photo.vaez -o photo.webp   (WebP lossless; the extension picks the format)
  vaez info photo.vaez                    header fields, section sizes and bits per pixel
  vaez info --json *.vaez
  vaez compress - -o - < in.png > in.vaez    '-' is stdin/stdout for a single input
  vaez decompress - -o - < in.vaez > out.png
  vaez compress --target-size 50KB photo.png  the best quality that fits in 50 KB
  vaez compress -e 0 photo.png            fastest encoding, about 4% larger files
  vaez compress photos/ -o packed/        a whole folder tree (up-to-date files are skipped)
  vaez inspect photo.png -o panel.png     error map and where the bits go (needs matplotlib)
  vaez bench kodak/ --out results/        the rate-distortion benchmark (benchmarks/rd.py)

Existing outputs are only replaced with --force. Exit status: 0 ok, 1 some file
failed, 2 usage error, 130 interrupted.
"""


class CliError(Exception):
    """A failure for one input; the message is printed after ``vaez: error:``."""


class Usage(Exception):
    """A usage error (exit status 2)."""


# ---------------------------------------------------------------------------- parsing

class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as a single ``vaez: error: ...`` line."""

    def error(self, message):  # noqa: D401 - argparse API
        hint = f"see '{self.prog} --help'"
        raise Usage(f"{message} ({hint})")

    def _print_message(self, message, file=None):
        """As argparse's, but a failed write (--help to a full disk) is an error, not ignored."""
        if message:
            (file or sys.stderr).write(message)


class _LazyVersion(argparse.Action):
    """``--version`` that reads ``neuralcodec.__version__`` only when asked (no torch)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
                 help="show the version and exit"):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        out = _stdout()
        out.write(f"{PROG} {_version()}\n")
        out.flush()
        parser.exit(EXIT_OK)


def _version() -> str:
    """``neuralcodec.__version__``, read from the source that ``import neuralcodec`` would load
    rather than by importing it (which loads NumPy and Pillow: 0.2 s of a 0.3 s budget)."""
    import importlib.util
    import re

    try:
        origin = importlib.util.find_spec("neuralcodec").origin
        with open(origin, "rb") as f:
            found = re.search(rb'^__version__ = "([0-9A-Za-z.+-]+)"\r?$', f.read(), re.MULTILINE)
        if found:
            return found.group(1).decode("ascii")
    except (AttributeError, ImportError, OSError, TypeError, ValueError):
        pass
    from neuralcodec import __version__   # the slow way, should the file not say it plainly

    return __version__


def _quality(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or not 1.0 <= value <= 100.0:
        raise argparse.ArgumentTypeError(f"quality must be between 1 and 100, got {text}")
    return round(value * 100) / 100


def _target_size(text: str) -> int:
    from neuralcodec.rate_control import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _jobs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    parser = _Parser(prog=PROG, formatter_class=raw, epilog=EXAMPLES,
                     description="vaez: a learned lossy image codec (.vaez files).")
    parser.add_argument("--version", action=_LazyVersion)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def common(p, multi_help: str):
        p.add_argument("-o", "--output", metavar="OUT",
                       help=f"{multi_help}; '-' for stdout (single input only)")
        p.add_argument("--force", action="store_true", help="overwrite existing output files")
        p.add_argument("--quiet", action="store_true",
                       help="print nothing but errors (no per-file lines, no progress bar)")
        p.add_argument("--device", default="cpu", metavar="DEV",
                       help="where the transforms run: cpu (default) or cuda; files are "
                            "interchangeable between devices")
        p.add_argument("--jobs", type=_jobs, default=1, metavar="N",
                       help="with a folder input: files coded in N worker processes (default 1)")

    c = sub.add_parser(
        "compress", help="compress images to .vaez", formatter_class=raw,
        description="Compress images (PNG, JPEG, WebP, TIFF, ...) to .vaez files.",
        epilog="examples:\n"
               "  vaez compress photo.png                  -> photo.vaez\n"
               "  vaez compress -q 40 photo.png -o low.vaez\n"
               "  vaez compress *.png -o compressed/\n"
               "  vaez compress - -o - < photo.png > photo.vaez\n"
               "  vaez compress --target-size 50KB photo.png   (never larger; within 5% below)\n"
               "  vaez compress --target-psnr 36 photo.png     (fewest bytes with PSNR >= 36 dB)\n"
               "  vaez compress -e 2 photo.png                 (slower encoder, smaller file)\n"
               "  vaez compress --strip photo.jpg              (drop ICC profile and EXIF)\n"
               "  vaez compress photos/ -o packed/ --jobs 2    (mirror a folder tree)\n"
               "\n"
               "A folder input is walked recursively: every png/jpg/jpeg/webp/bmp/tif/tiff/gif/\n"
               "ppm/pgm file becomes OUTDIR/<same relative path>.vaez. Outputs newer than their\n"
               "input are skipped as up to date, older ones are redone; --force redoes all.\n")
    c.add_argument("inputs", nargs="+", metavar="IMG",
                   help="input image files ('-' for stdin), or one folder (needs -o OUTDIR)")
    c.add_argument("-q", "--quality", type=_quality, default=None, metavar="Q",
                   help="quality 1..100, rounded to hundredths; higher means more bits (default 75)")
    targets = c.add_mutually_exclusive_group()
    targets.add_argument("--target-size", type=_target_size, metavar="SIZE",
                         help="the best quality whose file is at most SIZE: bytes, or 50KB, "
                              "1.5MB, 64KiB (KB = 1000 bytes, KiB = 1024)")
    targets.add_argument("--target-bpp", type=_positive, metavar="B",
                         help="the best quality whose file has at most B bits per pixel")
    targets.add_argument("--target-psnr", type=_positive, metavar="DB",
                         help="the lowest quality (fewest bytes) whose PSNR is at least DB")
    c.add_argument("--coder", choices=("auto", "constriction", "huffman"), default="auto",
                   help="entropy coder (default auto: constriction if installed, else huffman)")
    c.add_argument("--strip", action="store_true",
                   help="drop the ICC profile and EXIF metadata (kept by default)")
    c.add_argument("-e", "--effort", type=int, choices=EFFORTS, default=DEFAULT_EFFORT,
                   metavar="E", help=f"encoder effort 0..3 (default {DEFAULT_EFFORT}): higher is slower to encode and gives "
                        "smaller files at the same quality; decoding speed is unchanged")
    common(c, "output file for one input, or a directory (several inputs, a trailing '/' "
              "or an existing directory); default: the input name with a .vaez suffix")

    d = sub.add_parser(
        "decompress", help="decompress .vaez files to images", formatter_class=raw,
        description="Decompress .vaez files. The output format follows the extension of -o "
                    "(PNG by default; WebP is written lossless, JPEG at quality 95).",
        epilog="examples:\n"
               "  vaez decompress photo.vaez               -> photo.png\n"
               "  vaez decompress photo.vaez -o photo.webp\n"
               "  vaez decompress *.vaez -o decoded/\n"
               "  vaez decompress - -o - < photo.vaez > photo.png\n"
               "  vaez decompress packed/ -o decoded/          (mirror a folder tree as PNG)\n")
    d.add_argument("inputs", nargs="+", metavar="FILE",
                   help=".vaez files ('-' for stdin), or one folder (needs -o OUTDIR)")
    common(d, "output image file for one input, or a directory (several inputs, a trailing "
              "'/' or an existing directory); default: the input name with a .png suffix")

    i = sub.add_parser(
        "info", help="show what a .vaez file holds (fast, no model needed)", formatter_class=raw,
        description="Print the header fields, section sizes, total size and bits per pixel.",
        epilog="examples:\n  vaez info photo.vaez\n  vaez info --json *.vaez\n")
    i.add_argument("inputs", nargs="+", metavar="FILE", help=".vaez files ('-' for stdin)")
    i.add_argument("--json", action="store_true",
                   help="machine-readable output: an object for one file, a list for several")

    n = sub.add_parser(
        "inspect", help="a figure: original, reconstruction, error and where the bits go",
        formatter_class=raw,
        description="Write one PNG figure with the original, the reconstruction, the absolute "
                    "error, the bits spent per latent position and the most expensive latent "
                    "channels. For a .vaez input only the decoded image is known. Needs "
                    "matplotlib (pip install 'vaez[plot]').",
        epilog="examples:\n  vaez inspect photo.png -o panel.png -q 40\n"
               "  vaez inspect photo.vaez              -> photo-inspect.png\n")
    n.add_argument("input", metavar="IMG|FILE.vaez", help="an image, or a .vaez file")
    n.add_argument("-o", "--output", metavar="PNG",
                   help="where to write the figure (default: the input name + '-inspect.png')")
    n.add_argument("-q", "--quality", type=_quality, default=75.0, metavar="Q",
                   help="quality for an image input (default 75; ignored for .vaez)")
    n.add_argument("--coder", choices=("auto", "constriction", "huffman"), default="auto",
                   help="entropy coder for an image input")
    n.add_argument("--force", action="store_true", help="overwrite an existing output file")

    sub.add_parser(
        "bench", add_help=False,
        help="rate-distortion benchmark against JPEG/WebP/AVIF (all options: vaez bench --help)",
        description="Runs benchmarks/rd.py: vaez bench DIR [--out results/] [--plot] ...")
    return parser


# ---------------------------------------------------------------------------- output

class Reporter:
    """Per-file lines, errors and the progress bar, all on stderr."""

    def __init__(self, total: int, quiet: bool):
        self.total = total
        self.quiet = quiet
        self.bar = total > 1 and not quiet and _isatty(sys.stderr)
        self._bar_shown = False

    def _clear_bar(self):
        if self._bar_shown:
            sys.stderr.write("\r\x1b[K")
            self._bar_shown = False

    def progress(self, done: int, name: str, extra: str = ""):
        if not self.bar:
            return
        width = 20
        filled = width * done // self.total
        text = f"[{'#' * filled}{' ' * (width - filled)}] {done}/{self.total} {extra}{name}"
        columns = shutil.get_terminal_size((80, 24)).columns
        sys.stderr.write("\r\x1b[K" + text[:max(columns - 1, 10)])
        sys.stderr.flush()
        self._bar_shown = True

    def line(self, text: str):
        if self.quiet:
            return
        self._clear_bar()
        sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def error(self, text: str):
        self._clear_bar()
        _error(text)

    def finish(self):
        self._clear_bar()
        sys.stderr.flush()


def _error(text: str):
    sys.stderr.write(f"{PROG}: error: {text}\n")
    sys.stderr.flush()


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _human_size(n: int) -> str:
    if n < 1000:
        return f"{n} B"
    for unit in ("KB", "MB", "GB"):
        n /= 1000
        if n < 1000 or unit == "GB":
            return f"{n:.1f} {unit}"
    return f"{n} B"  # pragma: no cover


def _oserror_text(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on device (disk full)"
    if exc.errno == errno.EDQUOT:
        return "disk quota exceeded"
    return exc.strerror or str(exc) or type(exc).__name__


def _describe(exc: BaseException, name: str) -> str:
    """One line for ``exc`` that names ``name`` exactly once."""
    if isinstance(exc, OSError):
        target = exc.filename if exc.filename is not None else name
        msg = f"{os.fsdecode(target)}: {_oserror_text(exc)}"
    elif isinstance(exc, MemoryError):
        msg = "out of memory"
    elif isinstance(exc, CliError):
        msg = str(exc)
    else:
        msg = str(exc) or type(exc).__name__
        known = (ValueError, RuntimeError)
        if not isinstance(exc, known):
            msg = f"internal error ({type(exc).__name__}: {msg})"
    msg = " ".join(msg.split())  # one line
    if msg.startswith("<bytes>"):
        msg = name + msg[len("<bytes>"):]
    return msg if name in msg else f"{name}: {msg}"


# ---------------------------------------------------------------------------- files

def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def _output_error(path: str, exc: OSError) -> CliError:
    """The one-line CliError for a refused or failed write of ``path``."""
    from formats import OutputExistsError

    if isinstance(exc, OutputExistsError):
        return CliError(f"{path} already exists (use --force to overwrite)")
    return CliError(f"cannot write {path}: {_oserror_text(exc)}")


def _write_file(path: str, write, force: bool) -> None:
    """``formats.atomic_write`` (temporary file, fsync, rename; no overwrite without force)."""
    from formats import atomic_write

    try:
        atomic_write(path, write, force)
    except OSError as exc:
        raise _output_error(path, exc) from None


def _stdout():
    """sys.stdout, or a CliError when the process was started with it closed."""
    if sys.stdout is None:
        raise CliError("<stdout>: standard output is closed")
    return sys.stdout


def _open_input(name: str):
    if name == STDIO:
        if sys.stdin is None:
            raise CliError("<stdin>: standard input is closed")
        if _isatty(sys.stdin):
            raise CliError("<stdin>: refusing to read data from a terminal")
        return contextlib.nullcontext(sys.stdin.buffer)
    if os.path.isdir(name):
        raise CliError(f"{name}: is a directory")
    return open(name, "rb")


def _read_input(name: str) -> bytes:
    with _open_input(name) as f:
        data = f.read()
    if not data:
        raise CliError(f"{'<stdin>' if name == STDIO else name}: empty input")
    return data


# A pipe or device is read only this far past a valid header: the latent streams take a few
# bytes per pixel at the very most, the alpha plane as PNG about one, and metadata rarely
# more than megabytes; a file on disk is read whole (its size is known).
_VAEZ_BYTES_PER_PIXEL = 16
_VAEZ_SLACK = 256 << 20


def _read_vaez_input(name: str) -> bytes:
    """A .vaez input, read header first: a wrong magic or header fails after a few bytes
    (`vaez info /dev/zero` included), and an endless pipe or device stops at a bound
    derived from the header's dimensions."""
    import formats

    shown = "<stdin>" if name == STDIO else name
    with _open_input(name) as f:
        try:
            regular = stat.S_ISREG(os.fstat(f.fileno()).st_mode)
            start = f.tell() if regular else 0
        except (OSError, ValueError, AttributeError):   # a stream without a file descriptor
            regular = False
        head = f.read(formats.MAX_HEADER_SIZE)   # buffered: all of it unless the input ends
        if not head:
            raise CliError(f"{shown}: empty input")
        header = formats.read_header(head)
        if regular:
            f.seek(start)
            return f.read()
        limit = header.width * header.height * _VAEZ_BYTES_PER_PIXEL + _VAEZ_SLACK
        data = bytearray(head)
        while len(data) <= limit:
            chunk = f.read(min(limit + 1 - len(data), 1 << 20))
            if not chunk:
                return bytes(data)
            data += chunk
    raise CliError(f"{shown}: the stream goes on past {limit} bytes, more than a "
                   f"{header.width}x{header.height} image needs; vaez stops reading pipes and "
                   "devices there (save it to a file to read it whole)")


def _write_stdout(data: bytes, force: bool) -> None:
    if _isatty(sys.stdout) and not force:
        raise CliError("<stdout>: refusing to write binary data to a terminal "
                       "(redirect it, or use --force)")
    out = _stdout().buffer
    out.write(data)
    out.flush()


def _require_single_stdin(inputs: list[str]) -> None:
    if STDIO in inputs and len(inputs) > 1:
        raise Usage("'-' (stdin) can only be used as the only input")


def _plan_outputs(inputs: list[str], output: str | None, suffix: str):
    """(The output path for every input (STDIO for stdout), the output directory this call
    created or None); raises Usage for bad combinations."""
    _require_single_stdin(inputs)
    if output == STDIO and len(inputs) > 1:
        raise Usage("-o - (stdout) needs exactly one input")
    as_dir = output is not None and output != STDIO and (
        len(inputs) > 1 or output.endswith(("/", os.sep)) or os.path.isdir(output))
    if as_dir and inputs == [STDIO]:
        raise Usage("cannot name an output file for stdin inside a directory; give -o FILE or -o -")
    plan = []
    for name in inputs:
        if output is None:
            plan.append(STDIO if name == STDIO else os.path.splitext(name)[0] + suffix)
        elif as_dir:
            stem = os.path.splitext(os.path.basename(os.path.normpath(name)))[0]
            plan.append(os.path.join(output, stem + suffix))
        else:
            plan.append(output)
    created = None
    if as_dir and not os.path.isdir(output):
        try:
            os.makedirs(output, exist_ok=True)   # up front: an unusable place fails at once
        except OSError as exc:
            raise CliError(f"cannot create output directory {output}: {_oserror_text(exc)}") from None
        created = output
    return plan, created


def _check_output(src: str, dst: str, force: bool, written: dict[str, str]) -> None:
    """Refuse outputs that would clobber an input, a directory, or (without force) a file."""
    if dst == STDIO:
        return
    key = os.path.abspath(dst)
    if key in written:
        raise CliError(f"{dst} was already written from {written[key]} in this run")
    if src != STDIO and _same_file(src, dst):
        raise CliError(f"output {dst} is the input file itself; choose another name with -o")
    from formats import check_output_path  # the rules atomic_write applies again when writing

    try:
        check_output_path(dst, force)
    except OSError as exc:
        raise _output_error(dst, exc) from None


def _codec(device: str = "cpu"):
    from neuralcodec.codec import default_codec  # the model loads here (torch: only to encode)

    try:
        return default_codec(device)
    except ValueError as exc:   # an unknown or absent device: a usage-level error
        raise CliError(str(exc)) from None


# ---------------------------------------------------------------------------- commands

def _run_each(args, work, halves=None) -> int:
    """Run ``work(src, dst, force)`` for every input, collecting failures. ``halves``:
    ``work`` split as ``(first(src, dst), second(result, src, dst, force))``, so that with
    several files one file's second half runs beside the next one's first (`_Pipeline`)."""
    suffix = VAEZ_SUFFIX if args.command == "compress" else ".png"
    plan, created = _plan_outputs(args.inputs, args.output, suffix)
    reporter = Reporter(len(args.inputs), args.quiet)
    failed: list[str] = []
    written: dict[str, str] = {}

    def record(key, outcome) -> None:
        display, dst = key
        if isinstance(outcome, BrokenPipeError):
            raise outcome  # the reader of stdout is gone: stop (handled in main)
        if isinstance(outcome, Exception):
            failed.append(display)
            reporter.error(_describe(outcome, display))
            return
        if dst != STDIO:
            written[os.path.abspath(dst)] = display
        reporter.line(outcome[0])

    pipeline = _Pipeline(record) if halves and len(plan) > 1 and STDIO not in plan else None
    try:
        for done, (src, dst) in enumerate(zip(args.inputs, plan)):
            display = "<stdin>" if src == STDIO else src
            reporter.progress(done, display)
            if (pipeline and pipeline.pending
                    and os.path.abspath(pipeline.pending[0][1]) == os.path.abspath(dst)):
                pipeline.settle()   # the same output twice: the first must count as written
            try:
                if src != STDIO and not os.path.lexists(src):
                    raise CliError(f"{src}: no such file")
                if src != STDIO and os.path.isdir(src):
                    raise CliError(f"{src}: is a directory, not a file")
                _check_output(src, dst, args.force, written)
                if pipeline:
                    result = halves[0](src, dst)
                else:
                    outcome = work(src, dst, args.force)
            except BrokenPipeError:
                raise
            except Exception as exc:  # noqa: BLE001 - reported as one line, never a traceback
                if pipeline:
                    pipeline.fail((display, dst), exc)
                else:
                    record((display, dst), exc)
                continue
            if pipeline:
                pipeline.submit((display, dst), halves[1], result, src, dst, args.force)
                del result   # the helper holds it only as long as its write takes
            else:
                record((display, dst), outcome)
        if pipeline:
            pipeline.settle()
        reporter.progress(len(plan), "")
    finally:
        if pipeline:
            pipeline.close()
        reporter.finish()
        if created and not written:   # nothing went into the directory made for this run
            with contextlib.suppress(OSError):
                os.rmdir(created)
    return _exit_status(failed, len(args.inputs))


def _exit_status(failed: list[str], total: int) -> int:
    """EXIT_FAILURE if any input failed (summarised on stderr when there were several)."""
    if not failed:
        return EXIT_OK
    if total > 1:
        _error(f"{len(failed)} of {total} files failed: {', '.join(failed)}")
    return EXIT_FAILURE


def _compress_options(args) -> dict:
    """What every compress worker needs, as a picklable dict (workers may be processes)."""
    options = {"quality": 75.0 if args.quality is None else args.quality, "coder": args.coder,
               "target_size": args.target_size, "target_bpp": args.target_bpp,
               "target_psnr": args.target_psnr, "strip": args.strip, "effort": args.effort,
               "device": args.device}
    target = next((flag for flag, key in (("--target-size", "target_size"),
                                          ("--target-bpp", "target_bpp"),
                                          ("--target-psnr", "target_psnr"))
                   if options[key] is not None), None)
    if target and args.quality is not None and not args.quiet:
        sys.stderr.write(f"{PROG}: note: -q {args.quality:g} is ignored: {target} picks the "
                         "quality\n")
    return options


def _target_text(options: dict) -> str | None:
    if options["target_size"] is not None:
        return f"target {_human_size(options['target_size'])}"
    if options["target_bpp"] is not None:
        return f"target {options['target_bpp']:g} bpp"
    if options["target_psnr"] is not None:
        return f"target {options['target_psnr']:g} dB"
    return None


def _compress_file(src: str, dst: str, force: bool, options: dict):
    """Compress one input; returns (the line to print, {"in", "out", "pixels"} byte counts).

    Module level (not a closure) so a process pool can run it."""
    data_in = _read_input(src) if src == STDIO else src
    size_in = len(data_in) if src == STDIO else os.path.getsize(src)
    frames = _frame_count(data_in)
    target = _target_text(options)
    reached = None
    if target:
        from neuralcodec import compress_to_target

        reached = compress_to_target(
            data_in, coder=options["coder"], target_size=options["target_size"],
            target_bpp=options["target_bpp"], target_psnr=options["target_psnr"],
            strip=options["strip"], codec=_codec(options["device"]), effort=options["effort"])
        data = reached.data
    else:
        if options["strip"]:
            from neuralcodec.rate_control import prepare

            data_in = prepare(data_in, strip=True)[0]
        data = _codec(options["device"]).compress(data_in, quality=options["quality"], coder=options["coder"],
                                 effort=options["effort"])
    if dst == STDIO:
        _write_stdout(data, force)
    else:
        _write_file(dst, lambda f: f.write(data), force)
    from formats import read_header

    h = read_header(data)
    bpp = 8 * len(data) / (h.width * h.height)
    shown_src = "<stdin>" if src == STDIO else src
    shown_dst = "<stdout>" if dst == STDIO else dst
    line = f"{shown_src} -> {shown_dst}  {_human_size(len(data))}  {bpp:.2f} bpp"
    if reached is not None:
        psnr = "lossless" if math.isinf(reached.psnr) else f"{reached.psnr:.2f} dB"
        line += f"  quality {reached.quality:g}  {psnr}  ({target}"
        line += f"; {reached.note})" if reached.note else ")"
    if frames > 1:
        line += f"  (first of {frames} frames: .vaez holds one image)"
    return line, {"in": size_in, "out": len(data), "pixels": h.width * h.height}


_ANIMATED_FORMATS = ("GIF", "PNG", "WEBP")   # not MPO: a camera JPEG's extra frames are previews


def _frame_count(source) -> int:
    """How many frames an animated GIF, PNG or WebP input has (1 for anything else)."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
            animated = im.format in _ANIMATED_FORMATS and getattr(im, "is_animated", False)
            return int(im.n_frames) if animated else 1
    except Exception:   # noqa: BLE001 - only for the note: the input was already compressed
        return 1


def _decompress_file(src: str, dst: str, force: bool, options: dict | None = None):
    """Decompress one input; returns (the line to print, byte counts) like ``_compress_file``."""
    return _store_decoded(_decode_file(src, dst, options), src, dst, force)


def _decode_file(src: str, dst: str, options: dict | None = None):
    """The first half of `_decompress_file`: (decoded PIL image, output format, input bytes)."""
    import formats

    fmt = formats.image_format(dst)  # PNG for stdout and names without an extension
    if fmt == "VAEZ":  # known to Pillow through our own plugin, but not a decompressed image
        raise CliError(f"{dst}: decompress writes images; choose an image extension such as .png")
    data = _read_vaez_input(src)
    formats.unpack(data)  # validate before loading the model
    return _codec((options or {}).get("device", "cpu")).decompress(data), fmt, len(data)


def _store_decoded(decoded, src: str, dst: str, force: bool):
    """The second half: encode the image (PNG and the like: one core, outside the GIL in
    Pillow) and write it atomically; returns (line, byte counts)."""
    import io

    import formats

    image, fmt, size_in = decoded
    shown_src = "<stdin>" if src == STDIO else src
    # encode_image reports anything Pillow cannot store (a bad EXIF payload included)
    # as one ImageError line
    buf = io.BytesIO()
    formats.encode_image(image, fmt, buf)
    encoded = buf.getvalue()
    if dst == STDIO:
        _write_stdout(encoded, force)
        shown_dst = "<stdout>"
    else:
        _write_file(dst, lambda f: f.write(encoded), force)
        shown_dst = dst
    line = f"{shown_src} -> {shown_dst}  {image.width}x{image.height} {image.mode}  ({fmt})"
    return line, {"in": size_in, "out": len(encoded), "pixels": image.width * image.height}


def cmd_compress(args) -> int:
    options = _compress_options(args)
    if any(name != STDIO and os.path.isdir(name) for name in args.inputs):
        return _run_tree(args, _compress_file, options, IMAGE_SUFFIXES, VAEZ_SUFFIX)
    return _run_each(args, lambda src, dst, force: _compress_file(src, dst, force, options))


def cmd_decompress(args) -> int:
    if any(name != STDIO and os.path.isdir(name) for name in args.inputs):
        return _run_tree(args, _decompress_file, {"device": args.device}, (VAEZ_SUFFIX,), ".png",
                         halves=(_decode_file, _store_decoded))
    options = {"device": args.device}
    return _run_each(args, lambda src, dst, force: _decompress_file(src, dst, force, options),
                     halves=(lambda src, dst: _decode_file(src, dst, options), _store_decoded))


# ---------------------------------------------------------------------------- folder trees

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm",
                  ".pgm")


def _tree_plan(root: str, outdir: str, suffixes, new_suffix: str, problems: list):
    """(input, output) for every file under ``root`` with one of ``suffixes`` (any case), in
    sorted order; the output is the same relative path under ``outdir`` with ``new_suffix``.
    ``outdir`` itself is not walked when it lies inside ``root``."""
    skip = os.path.realpath(outdir)

    def walk_error(exc: OSError):
        problems.append((exc.filename or root, exc))

    for folder, subfolders, files in os.walk(root, onerror=walk_error):
        subfolders[:] = sorted(d for d in subfolders
                               if os.path.realpath(os.path.join(folder, d)) != skip)
        for name in sorted(files):
            if os.path.splitext(name)[1].lower() in suffixes:
                src = os.path.join(folder, name)
                rel = os.path.relpath(src, root)
                yield src, os.path.join(outdir, os.path.splitext(rel)[0] + new_suffix)


def _up_to_date(src: str, dst: str) -> bool:
    try:
        return os.stat(dst).st_mtime_ns >= os.stat(src).st_mtime_ns and os.path.isfile(dst)
    except OSError:
        return False


_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def _one_thread_per_worker():
    """Pool workers share the CPU: one compute thread each. Set in the environment the spawned
    workers inherit, because the thread pools (torch's, and NumPy's BLAS, which decodes) are
    sized when those libraries load; restored in this process afterwards."""
    saved = {name: os.environ.get(name) for name in _THREAD_VARIABLES}
    os.environ.update({name: "1" for name in _THREAD_VARIABLES})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _run_tree(args, worker, options, suffixes, new_suffix: str, halves=None) -> int:
    """Mirror the folder ``args.inputs[0]`` into ``args.output``: run ``worker`` on every
    matching file whose output is missing or older than it (all of them with ``--force``),
    keep going past failures, show one progress bar and a summary.

    ``halves``: ``worker`` split in two, ``(first(src, dst, options), second(result, src,
    dst, force))``; in one process, file k's second half (decompress: the PNG encode and
    write, single-threaded) then runs in a thread beside file k+1's first half."""
    if len(args.inputs) != 1:
        raise Usage("a folder input must be the only input")
    root = args.inputs[0]
    outdir = args.output
    if outdir is None or outdir == STDIO:
        raise Usage(f"a folder input needs -o OUTDIR (the tree under {root} is mirrored there)")
    if os.path.exists(outdir) and not os.path.isdir(outdir):
        raise CliError(f"{outdir}: exists and is not a directory")
    if os.path.isdir(outdir) and _same_file(root, outdir):
        raise Usage("-o OUTDIR must be another folder than the input folder")
    verb = "compressed" if args.command == "compress" else "decompressed"
    problems: list = []
    plan = list(_tree_plan(root, outdir, suffixes, new_suffix, problems))
    reporter = Reporter(len(plan), args.quiet)
    failed: list[str] = []
    for name, exc in problems:
        failed.append(os.fsdecode(name))
        reporter.error(_describe(exc, os.fsdecode(name)))
    tasks, owner, skipped = [], {}, 0
    for src, dst in plan:
        key = os.path.normcase(os.path.abspath(dst))
        if key in owner:
            failed.append(src)
            reporter.error(f"{src}: its output {dst} is also the output of {owner[key]}; skipped")
            continue
        owner[key] = src
        if not args.force and _up_to_date(src, dst):
            skipped += 1
        else:
            tasks.append((src, dst))
    totals = {"in": 0, "out": 0, "pixels": 0, "bits": 0.0, "done": 0}
    finished = skipped

    def show(name):
        if args.command == "compress":
            extra = f"saved {_human_size(max(totals['in'] - totals['out'], 0))}  "
        else:
            extra = f"written {_human_size(totals['out'])}  "
        reporter.progress(finished, name, extra)

    def record(src, outcome):
        nonlocal finished
        finished += 1
        if isinstance(outcome, BaseException):
            failed.append(src)
            reporter.error(_describe(outcome, src))
        else:
            line, stats = outcome
            totals["done"] += 1
            for key in ("in", "out", "pixels"):
                totals[key] += stats[key]
            coded = stats["out"] if args.command == "compress" else stats["in"]
            totals["bits"] += 8 * coded / stats["pixels"]
            reporter.line(line)
        show(os.path.basename(src))

    made: list[str] = []   # folders this run created, parents first

    def prepare(dst):
        folder = os.path.dirname(dst)
        missing = []
        while folder and not os.path.isdir(folder):
            missing.append(folder)
            folder = os.path.dirname(folder)
        if missing:
            os.makedirs(missing[0], exist_ok=True)
            made.extend(reversed(missing))

    try:
        if args.jobs == 1 and halves is not None and len(tasks) > 1:
            _run_pipelined(tasks, halves, options, prepare, show, record)
        elif args.jobs == 1 or len(tasks) < 2:
            for src, dst in tasks:
                show(os.path.basename(src))
                try:
                    prepare(dst)
                    outcome = worker(src, dst, True, options)
                except Exception as exc:  # noqa: BLE001 - reported as one line, batch goes on
                    outcome = exc
                record(src, outcome)
        else:
            import concurrent.futures as cf
            import multiprocessing

            context = multiprocessing.get_context("spawn")  # no fork of a process holding torch
            with _one_thread_per_worker(), cf.ProcessPoolExecutor(
                    min(args.jobs, len(tasks)), mp_context=context) as pool:
                futures = {}
                for src, dst in tasks:
                    try:
                        prepare(dst)
                    except OSError as exc:
                        record(src, exc)
                        continue
                    futures[pool.submit(worker, src, dst, True, options)] = src
                try:
                    for future in cf.as_completed(futures):
                        try:
                            outcome = future.result()
                        except Exception as exc:  # noqa: BLE001
                            outcome = exc
                        record(futures[future], outcome)
                except BaseException:
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise
    finally:
        reporter.finish()
        for folder in reversed(made):   # deepest first: those that failed files left empty
            with contextlib.suppress(OSError):
                os.rmdir(folder)
    summary = f"{totals['done']} {verb}, {skipped} skipped (up to date), {len(failed)} failed"
    if totals["done"]:
        summary += (f"; {_human_size(totals['in'])} in, {_human_size(totals['out'])} out")
        if args.command == "compress" and totals["in"]:
            summary += f" ({100 * (1 - totals['out'] / totals['in']):.0f}% smaller)"
        summary += f"; mean {totals['bits'] / totals['done']:.3f} bpp"
    elif not plan:
        kinds = "images" if args.command == "compress" else ".vaez files"
        summary = f"no {kinds} found under {root}"
    reporter.line(summary)
    return _exit_status(failed, len(plan) + len(problems))


class _Pipeline:
    """Second halves of files (decompress: the PNG encode and write) in one helper thread,
    while the caller runs the next file's first half; each outcome (the result or the
    exception) goes to ``record(key, outcome)`` in the order the files were handed in."""

    def __init__(self, record):
        import concurrent.futures as cf

        self.record = record
        self.pending = None   # (key, future) of the file in flight
        self.pool = cf.ThreadPoolExecutor(1, thread_name_prefix="vaez-store")

    def submit(self, key, fn, *args) -> None:
        self.settle()
        self.pending = (key, self.pool.submit(fn, *args))

    def fail(self, key, exc: BaseException) -> None:
        """A file that failed before its second half: recorded after the one in flight."""
        self.settle()
        self.record(key, exc)

    def settle(self) -> None:
        if self.pending is not None:
            key, future = self.pending
            self.pending = None
            try:
                outcome = future.result()
            except Exception as exc:  # noqa: BLE001 - reported as one line, batch goes on
                outcome = exc
            self.record(key, outcome)

    def close(self) -> None:
        """Waits for the file in flight, also through further Ctrl-Cs (so that its atomic
        write finishes or cleans up after itself), and reports it if it was not yet."""
        import concurrent.futures as cf

        while self.pending is not None and not self.pending[1].done():
            try:
                # on the future, not the thread: an interrupted thread join can take the
                # thread for finished (Python 3.11) and let the process exit mid-write
                cf.wait([self.pending[1]])
            except KeyboardInterrupt:
                pass
        with contextlib.suppress(Exception):   # on the way out of an interrupted run
            self.settle()
        self.pool.shutdown(wait=True)


def _run_pipelined(tasks, halves, options, prepare, show, record) -> None:
    """One file after another, each file's second half in a helper thread while the next
    file's first half runs; outcomes are recorded in the files' order."""
    first, second = halves
    pipeline = _Pipeline(record)
    try:
        for src, dst in tasks:
            show(os.path.basename(src))
            try:
                prepare(dst)
                result = first(src, dst, options)
            except Exception as exc:  # noqa: BLE001
                pipeline.fail(src, exc)
                continue
            pipeline.submit(src, second, result, src, dst, True)
            del result
        pipeline.settle()
    finally:
        pipeline.close()


def _info_record(name: str, data: bytes) -> dict:
    import formats

    header, sections = formats.unpack(data)  # known sections only: ancillary ones are dropped
    total = len(data)
    payloads = {tag.strip(): len(payload) for tag, payload in sections.items()}
    header_bytes = formats.header_size(header)
    return {
        "file": name,
        "width": header.width,
        "height": header.height,
        "mode": header.mode,
        "quality": header.quality,
        "coder": header.coder,
        "model_id": header.model_id,
        "model_digest": header.model_digest.hex(),
        "y_shape": list(header.y_shape),
        "z_shape": list(header.z_shape),
        "symbol_crc": f"{header.symbol_crc:08x}",
        "sections": payloads,
        "version": header.version,
        "header_bytes": header_bytes,
        # everything else: each section's length, tag and CRC, the END section, and any
        # ancillary sections this reader skipped
        "container_overhead_bytes": total - header_bytes - sum(payloads.values()),
        "total_bytes": total,
        "bpp": 8 * total / (header.width * header.height),
        "metadata": _metadata(sections),
    }


def _metadata(sections: dict) -> dict:
    """ICC profile (size, description) and EXIF (tag count, Make/Model/DateTime) if present."""
    meta = {}
    icc = sections.get("ICCP")
    if icc:
        meta["icc_profile"] = {"bytes": len(icc), "description": _icc_description(icc)}
    exif = sections.get("EXIF")
    if exif:
        meta["exif"] = {"bytes": len(exif), **_exif_summary(exif)}
    return meta


def _icc_description(icc: bytes) -> str | None:
    import io

    try:
        from PIL import ImageCms

        text = ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc)))
    except Exception:  # noqa: BLE001 - no LittleCMS, or a profile it cannot parse
        return None
    return " ".join(text.split()) or None


_EXIF_POINTERS = {0x8769: "Exif", 0x8825: "GPS"}  # sub-IFDs whose tags are counted too
_EXIF_NAMES = {0x010F: "Make", 0x0110: "Model", 0x0132: "DateTime"}


def _exif_summary(exif: bytes) -> dict:
    from PIL import Image

    parsed = Image.Exif()
    try:
        parsed.load(exif)
        tags = sum(1 for tag in parsed if tag not in _EXIF_POINTERS)
        for pointer in _EXIF_POINTERS:
            if pointer in parsed:
                tags += len(parsed.get_ifd(pointer))
    except Exception:  # noqa: BLE001 - Pillow raises many types for malformed EXIF
        return {"tags": None, "error": "unreadable"}
    summary: dict = {"tags": tags}
    for tag, name in _EXIF_NAMES.items():
        value = parsed.get(tag)
        if value is not None:
            text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
            summary[name] = " ".join(text.replace("\0", " ").split())
    return summary


def _metadata_text(meta: dict) -> list[tuple[str, str]]:
    if not meta:
        return [("metadata", "none (no ICC profile, no EXIF)")]
    rows = []
    icc = meta.get("icc_profile")
    if icc:
        rows.append(("icc", f"{icc['bytes']} B" + (f", {icc['description']!r}"
                                                  if icc["description"] else "")))
    exif = meta.get("exif")
    if exif:
        if exif.get("tags") is None:
            rows.append(("exif", f"{exif['bytes']} B, unreadable"))
        else:
            named = ", ".join(f"{k} {exif[k]!r}" for k in _EXIF_NAMES.values() if k in exif)
            rows.append(("exif", f"{exif['bytes']} B, {exif['tags']} tags"
                                 + (f": {named}" if named else "")))
    return rows


def _info_text(r: dict) -> str:
    shape = lambda s: "x".join(str(v) for v in s)  # noqa: E731
    sections = ", ".join(f"{tag} {n} B" for tag, n in r["sections"].items())
    rows = [
        ("format", f".vaez version {r['version']}"),
        ("size", f"{r['width']}x{r['height']}"),
        ("mode", r["mode"]),
        ("quality", f"{r['quality']:g}"),
        ("coder", r["coder"]),
        ("model", f"{r['model_id']} (digest {r['model_digest']})"),
        ("latents", f"y {shape(r['y_shape'])}, z {shape(r['z_shape'])} (channels x h x w)"),
        ("sections", f"{sections} (payloads)"),
        ("overhead", f"header {r['header_bytes']} B, container {r['container_overhead_bytes']} B "
                     "(section framing, END, skipped ancillary sections)"),
        ("total", f"{r['total_bytes']} bytes ({_human_size(r['total_bytes'])}), "
                  f"{r['bpp']:.4f} bpp"),
        *_metadata_text(r["metadata"]),
    ]
    return "\n".join([r["file"]] + [f"  {k + ':':<10}{v}" for k, v in rows])


def cmd_info(args) -> int:
    _require_single_stdin(args.inputs)
    records, failed = [], []
    for name in args.inputs:
        display = "<stdin>" if name == STDIO else name
        try:
            records.append(_info_record(display, _read_vaez_input(name)))
        except Exception as exc:
            failed.append(display)
            _error(_describe(exc, display))
    out = _stdout()
    if args.json:
        if records:
            payload = records[0] if len(args.inputs) == 1 else records
            out.write(json.dumps(payload, indent=2) + "\n")
    else:
        out.write("\n\n".join(_info_text(r) for r in records) + ("\n" if records else ""))
    out.flush()
    return _exit_status(failed, len(args.inputs))


def cmd_inspect(args) -> int:
    from neuralcodec import inspect_panel

    try:
        inspect_panel.require_matplotlib()  # before torch: a missing extra fails fast
    except inspect_panel.MatplotlibMissing as exc:
        raise CliError(str(exc)) from None
    src = args.input
    if not os.path.exists(src):
        raise CliError(f"{src}: no such file")
    if os.path.isdir(src):
        raise CliError(f"{src}: is a directory, not a file")
    dst = args.output or os.path.splitext(src)[0] + "-inspect.png"
    _check_output(src, dst, args.force, {})
    try:
        analysis = inspect_panel.write_panel(dst, src, quality=args.quality, coder=args.coder,
                                             codec=_codec(), force=args.force)
    except OSError as exc:
        target = os.fsdecode(exc.filename) if exc.filename is not None else None
        if target is not None and os.path.abspath(target) == os.path.abspath(dst):
            raise _output_error(dst, exc) from None
        raise CliError(_describe(exc, src)) from None
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback
        raise CliError(_describe(exc, src)) from None
    psnr = analysis.psnr
    psnr_text = ("PSNR unknown (the input is a .vaez file)" if psnr is None
                 else "lossless" if math.isinf(psnr) else f"PSNR {psnr:.2f} dB")
    sys.stderr.write(f"{src} -> {dst}  quality {analysis.header.quality:g}  "
                     f"{_human_size(analysis.size)}  {analysis.bpp:.3f} bpp  {psnr_text}\n")
    return EXIT_OK


def cmd_bench(argv: list[str]) -> int:
    """``vaez bench DIR [options]``: ``benchmarks/rd.py`` with its own options and output."""
    try:
        from benchmarks import rd
    except ImportError as exc:
        raise CliError(f"vaez bench needs the benchmarks package ({exc}); "
                       "reinstall vaez from its source tree") from None
    try:
        return rd.main(argv, prog=f"{PROG} bench") or EXIT_OK
    except SystemExit as exc:  # argparse (--help, usage errors) and rd's own fatal errors
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or EXIT_OK
        text = str(exc.code)
        raise CliError(text[len("error: "):] if text.startswith("error: ") else text) from None
    except OSError as exc:   # the report folder: one line naming the path
        raise CliError(_describe(exc, "bench")) from None


COMMANDS = {"compress": cmd_compress, "decompress": cmd_decompress, "info": cmd_info,
            "inspect": cmd_inspect}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vaez`` console script; returns the exit status."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv[:1] == ["bench"]:  # rd.py parses its own options (and --help)
            return cmd_bench(argv[1:])
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help / --version
            if sys.stdout is not None:
                sys.stdout.flush()   # a full disk shows here, not silently at exit
            return exc.code if isinstance(exc.code, int) else EXIT_OK
        if args.command is None:
            raise Usage("missing command: compress, decompress, info, inspect or bench "
                        "(see 'vaez --help')")
        return COMMANDS[args.command](args)
    except Usage as exc:
        _error(str(exc))
        return EXIT_USAGE
    except CliError as exc:
        _error(str(exc))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        _error("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away (e.g. `| head`): stop quietly, without a flush error at exit
        _silence_stdout()
        return EXIT_FAILURE
    except OSError as exc:   # the commands report their own files: mostly stdout (info, --help)
        _error(_describe(exc, "<stdout>"))
        _silence_stdout()
        return EXIT_FAILURE


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's last flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


if __name__ == "__main__":
    sys.exit(main())
