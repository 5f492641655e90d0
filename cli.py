"""The ``vaez`` command line: compress images to ``.vaez``, decompress them, inspect files.

Only the compress and decompress paths load torch and the model; ``--help``, ``--version``
and ``info`` stay light. Every output is written atomically by ``formats.atomic_write`` (a
temporary file in the target directory, then a rename), an existing file is only replaced
with ``--force``, and the inputs are never written to. Errors are reported as one line
``vaez: error: <file>: <message>``; exit status 0 on success, 1 when any file failed,
2 for usage errors and 130 when interrupted.
"""
from __future__ import annotations

import argparse
import errno
import json
import math
import os
import shutil
import sys

PROG = "vaez"
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


class _LazyVersion(argparse.Action):
    """``--version`` that reads ``neuralcodec.__version__`` only when asked (no torch)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
                 help="show the version and exit"):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from neuralcodec import __version__

        sys.stdout.write(f"{PROG} {__version__}\n")
        sys.stdout.flush()
        parser.exit(EXIT_OK)


def _quality(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or not 1.0 <= value <= 100.0:
        raise argparse.ArgumentTypeError(f"quality must be between 1 and 100, got {text}")
    return round(value * 100) / 100


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

    c = sub.add_parser(
        "compress", help="compress images to .vaez", formatter_class=raw,
        description="Compress images (PNG, JPEG, WebP, TIFF, ...) to .vaez files.",
        epilog="examples:\n"
               "  vaez compress photo.png                  -> photo.vaez\n"
               "  vaez compress -q 40 photo.png -o low.vaez\n"
               "  vaez compress *.png -o compressed/\n"
               "  vaez compress - -o - < photo.png > photo.vaez\n")
    c.add_argument("inputs", nargs="+", metavar="IMG", help="input image files ('-' for stdin)")
    c.add_argument("-q", "--quality", type=_quality, default=75.0, metavar="Q",
                   help="quality 1..100, rounded to hundredths; higher means more bits (default 75)")
    c.add_argument("--coder", choices=("auto", "constriction", "huffman"), default="auto",
                   help="entropy coder (default auto: constriction if installed, else huffman)")
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
               "  vaez decompress - -o - < photo.vaez > photo.png\n")
    d.add_argument("inputs", nargs="+", metavar="FILE", help=".vaez files ('-' for stdin)")
    common(d, "output image file for one input, or a directory (several inputs, a trailing "
              "'/' or an existing directory); default: the input name with a .png suffix")

    i = sub.add_parser(
        "info", help="show what a .vaez file holds (fast, no model needed)", formatter_class=raw,
        description="Print the header fields, section sizes, total size and bits per pixel.",
        epilog="examples:\n  vaez info photo.vaez\n  vaez info --json *.vaez\n")
    i.add_argument("inputs", nargs="+", metavar="FILE", help=".vaez files ('-' for stdin)")
    i.add_argument("--json", action="store_true",
                   help="machine-readable output: an object for one file, a list for several")
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

    def progress(self, done: int, name: str):
        if not self.bar:
            return
        width = 20
        filled = width * done // self.total
        text = f"[{'#' * filled}{' ' * (width - filled)}] {done}/{self.total} {name}"
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


def _read_input(name: str) -> bytes:
    if name == STDIO:
        if _isatty(sys.stdin):
            raise CliError("<stdin>: refusing to read data from a terminal")
        return sys.stdin.buffer.read()
    if os.path.isdir(name):
        raise CliError(f"{name}: is a directory")
    with open(name, "rb") as f:
        return f.read()


def _write_stdout(data: bytes, force: bool) -> None:
    if _isatty(sys.stdout) and not force:
        raise CliError("<stdout>: refusing to write binary data to a terminal "
                       "(redirect it, or use --force)")
    out = sys.stdout.buffer
    out.write(data)
    out.flush()


def _require_single_stdin(inputs: list[str]) -> None:
    if STDIO in inputs and len(inputs) > 1:
        raise Usage("'-' (stdin) can only be used as the only input")


def _plan_outputs(inputs: list[str], output: str | None, suffix: str) -> list[str]:
    """The output path for every input (STDIO for stdout); raises Usage for bad combinations."""
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
    if as_dir and not os.path.isdir(output):
        try:
            os.makedirs(output, exist_ok=True)
        except OSError as exc:
            raise CliError(f"cannot create output directory {output}: {_oserror_text(exc)}") from None
    return plan


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


def _codec():
    from neuralcodec.codec import default_codec  # torch is imported here, not before

    return default_codec()


# ---------------------------------------------------------------------------- commands

def _run_each(args, work) -> int:
    """Run ``work(src, dst, reporter)`` for every input, collecting failures."""
    suffix = VAEZ_SUFFIX if args.command == "compress" else ".png"
    plan = _plan_outputs(args.inputs, args.output, suffix)
    reporter = Reporter(len(args.inputs), args.quiet)
    failed: list[str] = []
    written: dict[str, str] = {}
    try:
        for done, (src, dst) in enumerate(zip(args.inputs, plan)):
            display = "<stdin>" if src == STDIO else src
            reporter.progress(done, display)
            try:
                if src != STDIO and not os.path.lexists(src):
                    raise CliError(f"{src}: no such file")
                if src != STDIO and os.path.isdir(src):
                    raise CliError(f"{src}: is a directory, not a file")
                _check_output(src, dst, args.force, written)
                line = work(src, dst, args.force)
            except BrokenPipeError:
                raise  # the reader of stdout is gone: stop (handled in main)
            except Exception as exc:  # noqa: BLE001 - reported as one line, never a traceback
                failed.append(display)
                reporter.error(_describe(exc, display))
                continue
            if dst != STDIO:
                written[os.path.abspath(dst)] = display
            reporter.line(line)
        reporter.progress(len(plan), "")
    finally:
        reporter.finish()
    return _exit_status(failed, len(args.inputs))


def _exit_status(failed: list[str], total: int) -> int:
    """EXIT_FAILURE if any input failed (summarised on stderr when there were several)."""
    if not failed:
        return EXIT_OK
    if total > 1:
        _error(f"{len(failed)} of {total} files failed: {', '.join(failed)}")
    return EXIT_FAILURE


def cmd_compress(args) -> int:
    def work(src, dst, force):
        data_in = _read_input(src) if src == STDIO else src
        data = _codec().compress(data_in, quality=args.quality, coder=args.coder)
        if dst == STDIO:
            _write_stdout(data, force)
        else:
            _write_file(dst, lambda f: f.write(data), force)
        from formats import read_header

        h = read_header(data)
        bpp = 8 * len(data) / (h.width * h.height)
        shown_src = "<stdin>" if src == STDIO else src
        shown_dst = "<stdout>" if dst == STDIO else dst
        return f"{shown_src} -> {shown_dst}  {_human_size(len(data))}  {bpp:.2f} bpp"

    return _run_each(args, work)


def cmd_decompress(args) -> int:
    def work(src, dst, force):
        import io

        import formats

        fmt = formats.image_format(dst)  # PNG for stdout and names without an extension
        data = _read_input(src)
        formats.unpack(data)  # validate before loading the model
        image = _codec().decompress(data)
        shown_src = "<stdin>" if src == STDIO else src
        # encode_image reports anything Pillow cannot store (a bad EXIF payload included)
        # as one ImageError line
        if dst == STDIO:
            buf = io.BytesIO()
            formats.encode_image(image, fmt, buf)
            _write_stdout(buf.getvalue(), force)
            shown_dst = "<stdout>"
        else:
            _write_file(dst, lambda f: formats.encode_image(image, fmt, f), force)
            shown_dst = dst
        return f"{shown_src} -> {shown_dst}  {image.width}x{image.height} {image.mode}  ({fmt})"

    return _run_each(args, work)


def _info_record(name: str, data: bytes) -> dict:
    import formats

    header, sections = formats.unpack(data)  # known sections only: ancillary ones are dropped
    total = len(data)
    payloads = {tag.strip(): len(payload) for tag, payload in sections.items()}
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
        "header_bytes": formats.HEADER_SIZE,
        # everything else: each section's length, tag and CRC, the END section, and any
        # ancillary sections this reader skipped
        "container_overhead_bytes": total - formats.HEADER_SIZE - sum(payloads.values()),
        "total_bytes": total,
        "bpp": 8 * total / (header.width * header.height),
    }


def _info_text(r: dict) -> str:
    shape = lambda s: "x".join(str(v) for v in s)  # noqa: E731
    sections = ", ".join(f"{tag} {n} B" for tag, n in r["sections"].items())
    rows = [
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
    ]
    return "\n".join([r["file"]] + [f"  {k + ':':<10}{v}" for k, v in rows])


def cmd_info(args) -> int:
    _require_single_stdin(args.inputs)
    records, failed = [], []
    for name in args.inputs:
        display = "<stdin>" if name == STDIO else name
        try:
            records.append(_info_record(display, _read_input(name)))
        except Exception as exc:
            failed.append(display)
            _error(_describe(exc, display))
    if args.json:
        if records:
            payload = records[0] if len(args.inputs) == 1 else records
            sys.stdout.write(json.dumps(payload, indent=2) + "\n")
    else:
        sys.stdout.write("\n\n".join(_info_text(r) for r in records) + ("\n" if records else ""))
    sys.stdout.flush()
    return _exit_status(failed, len(args.inputs))


COMMANDS = {"compress": cmd_compress, "decompress": cmd_decompress, "info": cmd_info}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vaez`` console script; returns the exit status."""
    parser = build_parser()
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help / --version
            return exc.code if isinstance(exc.code, int) else EXIT_OK
        if args.command is None:
            raise Usage("missing command: compress, decompress or info (see 'vaez --help')")
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
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
