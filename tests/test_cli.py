"""Tests for the ``vaez`` command line (cli.py): mostly in-process via ``cli.main``."""

import errno
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cli
import formats
import neuralcodec

ROOT = Path(__file__).resolve().parent.parent
W, H = 40, 30


def make_image(path, mode="RGB", seed=0):
    """A small smooth-ish test image of ``mode`` saved at ``path``; returns the PIL image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    base = (xx * 5 + yy * 3) % 256
    channels = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}[mode]
    planes = [np.clip(base + rng.integers(-20, 20, (H, W)) + 40 * c, 0, 255) for c in range(channels)]
    if mode in ("LA", "RGBA"):
        planes[-1] = rng.integers(0, 256, (H, W))  # arbitrary alpha: must come back exactly
    arr = np.stack(planes, axis=-1).astype(np.uint8)
    im = Image.fromarray(arr[..., 0] if channels == 1 else arr, mode)
    im.save(path)
    return im


def run(capsys, *argv):
    """Run cli.main in-process; returns (exit code, stdout text, stderr text)."""
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def listing(folder):
    return sorted(p.name for p in Path(folder).iterdir())


def assert_one_error_line(err, *needles):
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[0].startswith("vaez: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], err


def packed(sections=None, mode="RGB") -> bytes:
    """A container with placeholder streams: valid for ``formats.unpack``, not for the model."""
    header = formats.VaezHeader(width=W, height=H, mode=mode, quality=75.0, coder="huffman",
                                model_id="placeholder", model_digest=bytes(8), y_shape=(8, 4, 5),
                                z_shape=(4, 1, 2), symbol_crc=0)
    return formats.pack(header, sections or {"ZSYM": b"zz", "YSYM": b"yyy"})


@pytest.fixture
def vaez_file(tmp_path, capsys):
    src = tmp_path / "base.png"
    make_image(src, "RGB")
    code, _, err = run(capsys, "compress", src, "--quiet")
    assert code == 0, err
    return tmp_path / "base.vaez"


# ---------------------------------------------------------------- round trips

@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_round_trip_keeps_size_mode_alpha_and_input(tmp_path, capsys, mode):
    src = tmp_path / f"in_{mode}.png"
    original = make_image(src, mode)
    before = digest(src)
    code, _, err = run(capsys, "compress", src)
    assert code == 0, err
    packed = tmp_path / f"in_{mode}.vaez"
    assert packed.is_file()
    assert digest(src) == before  # the input is never modified
    assert f"{src} -> {packed}" in err and "bpp" in err
    out = tmp_path / "decoded.png"
    code, _, err = run(capsys, "decompress", packed, "-o", out)
    assert code == 0, err
    with Image.open(out) as im:
        assert im.size == (W, H) and im.mode == mode
        if mode == "RGBA":
            assert np.array_equal(np.asarray(im)[..., 3], np.asarray(original)[..., 3])
    assert listing(tmp_path) == sorted([src.name, packed.name, out.name])  # no temp files


def test_default_names(tmp_path, capsys):
    src = tmp_path / "photo.bmp"
    make_image(src)
    assert run(capsys, "compress", src)[0] == 0
    assert (tmp_path / "photo.vaez").is_file()
    assert run(capsys, "decompress", tmp_path / "photo.vaez")[0] == 0
    with Image.open(tmp_path / "photo.png") as im:
        assert im.format == "PNG" and im.size == (W, H)


def test_effort_option_matches_the_api_and_rejects_bad_levels(tmp_path, capsys):
    src = tmp_path / "e.png"
    make_image(src, "RGB", seed=4)
    out = tmp_path / "e.vaez"
    code, _, err = run(capsys, "compress", src, "-o", out, "-e", "2", "-q", "60")
    assert code == 0, err
    assert out.read_bytes() == neuralcodec.compress(str(src), quality=60, effort=2)
    # no -e: the library's default effort
    code, _, err = run(capsys, "compress", src, "-o", tmp_path / "d.vaez", "-q", "60")
    assert code == 0, err
    assert (tmp_path / "d.vaez").read_bytes() == neuralcodec.compress(str(src), quality=60)
    code, _, err = run(capsys, "compress", src, "-o", tmp_path / "bad.vaez", "--effort", "7")
    assert code == cli.EXIT_USAGE
    assert_one_error_line(err, "effort")
    assert not (tmp_path / "bad.vaez").exists()
    from neuralcodec import efforts

    assert (cli.EFFORTS, cli.DEFAULT_EFFORT) == (efforts.EFFORTS, efforts.DEFAULT_EFFORT)


@pytest.mark.parametrize("device, needle", [("tpu9", "device"), ("cuda:99", "cuda")])
def test_unusable_device_is_one_error_line(tmp_path, capsys, monkeypatch, device, needle):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    src = tmp_path / "d.png"
    make_image(src, "RGB")
    code, _, err = run(capsys, "compress", src, "--device", device)
    assert code != 0
    assert_one_error_line(err, needle)
    assert listing(tmp_path) == ["d.png"]


def test_cpu_device_option_round_trips(tmp_path, capsys):
    src = tmp_path / "c.png"
    make_image(src, "RGB", seed=6)
    code, _, err = run(capsys, "compress", src, "--device", "cpu")
    assert code == 0, err
    code, _, err = run(capsys, "decompress", tmp_path / "c.vaez", "-o", tmp_path / "back.png",
                       "--device", "cpu")
    assert code == 0, err
    assert (tmp_path / "c.vaez").read_bytes() == neuralcodec.compress(str(src), device="cpu")


def test_huffman_coder_round_trip_and_quality_rounding(tmp_path, capsys):
    src = tmp_path / "h.png"
    make_image(src, "RGB", seed=3)
    out = tmp_path / "h.vaez"
    code, _, err = run(capsys, "compress", src, "-o", out, "--coder", "huffman", "-q", "50.123")
    assert code == 0, err
    code, text, _ = run(capsys, "info", "--json", out)
    info = json.loads(text)
    assert info["coder"] == "huffman" and info["quality"] == 50.12
    code, _, err = run(capsys, "decompress", out, "-o", tmp_path / "h2.png")
    assert code == 0, err
    with Image.open(tmp_path / "h2.png") as im:
        assert im.size == (W, H) and im.mode == "RGB"


def test_decompress_webp_is_lossless(tmp_path, capsys, vaez_file):
    assert run(capsys, "decompress", vaez_file, "-o", tmp_path / "d.png")[0] == 0
    code, _, err = run(capsys, "decompress", vaez_file, "-o", tmp_path / "d.webp")
    assert code == 0, err
    with Image.open(tmp_path / "d.png") as a, Image.open(tmp_path / "d.webp") as b:
        assert b.format == "WEBP"
        assert np.array_equal(np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB")))


# ---------------------------------------------------------------- output naming

def test_output_file_and_directories(tmp_path, capsys):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    make_image(a, seed=1)
    make_image(b, "L", seed=2)
    assert run(capsys, "compress", a, "-o", tmp_path / "custom.vaez")[0] == 0
    assert (tmp_path / "custom.vaez").is_file()
    # a trailing slash means a directory, created if missing
    assert run(capsys, "compress", a, "-o", f"{tmp_path / 'new'}/")[0] == 0
    assert listing(tmp_path / "new") == ["a.vaez"]
    # several inputs: -o is a directory
    (tmp_path / "many").mkdir()
    code, _, err = run(capsys, "compress", a, b, "-o", tmp_path / "many")
    assert code == 0, err
    assert listing(tmp_path / "many") == ["a.vaez", "b.vaez"]
    assert err.count(" -> ") == 2
    code, _, err = run(capsys, "decompress", tmp_path / "many" / "a.vaez",
                       tmp_path / "many" / "b.vaez", "-o", tmp_path / "dec", "--quiet")
    assert code == 0 and err == ""
    assert listing(tmp_path / "dec") == ["a.png", "b.png"]


def test_several_inputs_keep_going_after_failures(tmp_path, capsys):
    good = tmp_path / "good.png"
    make_image(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"this is not an image")
    code, _, err = run(capsys, "compress", bad, tmp_path / "missing.png", good)
    assert code == 1
    assert (tmp_path / "good.vaez").is_file()
    assert not (tmp_path / "bad.vaez").exists() and not (tmp_path / "missing.vaez").exists()
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("vaez: error:")]
    assert any("bad.png" in line for line in errors)
    assert any("missing.png" in line for line in errors)
    assert "2 of 3 files failed" in errors[-1]


# ---------------------------------------------------------------- overwriting

def test_refuses_to_overwrite_without_force(tmp_path, capsys):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    make_image(a)
    make_image(b, seed=5)
    (tmp_path / "a.vaez").write_bytes(b"precious")
    code, _, err = run(capsys, "compress", a, b)
    assert code == 1
    assert "a.vaez already exists" in err and "--force" in err
    assert (tmp_path / "a.vaez").read_bytes() == b"precious"
    assert (tmp_path / "b.vaez").is_file()  # the other input was still processed
    code, _, err = run(capsys, "compress", a, "--force")
    assert code == 0, err
    assert (tmp_path / "a.vaez").read_bytes()[:5] == b"\x89VAEZ"
    # decompress refuses as well
    (tmp_path / "a_out.png").write_bytes(b"keep")
    code, _, err = run(capsys, "decompress", tmp_path / "a.vaez", "-o", tmp_path / "a_out.png")
    assert code == 1 and (tmp_path / "a_out.png").read_bytes() == b"keep"
    assert_one_error_line(err, "already exists")


def test_never_writes_onto_the_input(tmp_path, capsys):
    src = tmp_path / "x.png"
    make_image(src)
    before = digest(src)
    code, _, err = run(capsys, "compress", src, "-o", src, "--force")
    assert code == 1 and digest(src) == before
    assert_one_error_line(err, "x.png")


# ---------------------------------------------------------------- failures leave nothing

def test_corrupt_vaez_leaves_no_output(tmp_path, capsys, vaez_file):
    data = bytearray(vaez_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "bad.vaez"
    bad.write_bytes(bytes(data))
    before = listing(tmp_path)
    code, _, err = run(capsys, "decompress", bad)
    assert code == 1
    assert_one_error_line(err, "bad.vaez")
    assert listing(tmp_path) == before
    code, _, err = run(capsys, "info", bad)
    assert code == 1
    assert_one_error_line(err, "bad.vaez")


def test_unreadable_image_and_missing_file(tmp_path, capsys):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    code, _, err = run(capsys, "compress", junk)
    assert code == 1
    assert_one_error_line(err, "junk.png")
    code, _, err = run(capsys, "compress", tmp_path / "nope.png")
    assert code == 1
    assert_one_error_line(err, "nope.png")
    assert listing(tmp_path) == ["junk.png"]


def test_output_parent_is_a_file(tmp_path, capsys):
    src = tmp_path / "p.png"
    make_image(src)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    code, _, err = run(capsys, "compress", src, "-o", blocker / "out.vaez")
    assert code == 1
    assert_one_error_line(err, "p.png")
    assert listing(tmp_path) == ["blocker", "p.png"]


def test_output_dir_not_writable(tmp_path, capsys, monkeypatch):
    """Permission errors (simulated: the tests may run as root, who ignores modes)."""
    src = tmp_path / "p.png"
    make_image(src)
    locked = tmp_path / "locked"
    locked.mkdir()
    real_open = os.open

    def refuse_in_locked(path, *args, **kwargs):
        if str(path).startswith(str(locked)):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse_in_locked)
    code, _, err = run(capsys, "compress", src, "-o", locked / "out.vaez")
    assert code == 1
    assert_one_error_line(err, "p.png")
    assert listing(locked) == []


def test_disk_full_and_interrupt_leave_no_temp_file(tmp_path, capsys, monkeypatch):
    src = tmp_path / "s.png"
    make_image(src)

    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    code, _, err = run(capsys, "compress", src)
    assert code == 1
    assert_one_error_line(err, "s.png", "no space left")
    assert listing(tmp_path) == ["s.png"]

    def interrupt(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupt)
    code, _, err = run(capsys, "compress", src)
    assert code == 130 and "interrupted" in err and "Traceback" not in err
    assert listing(tmp_path) == ["s.png"]


# ---------------------------------------------------------------- stdin / stdout

def test_stdin_stdout_in_process(tmp_path, capsys, monkeypatch):
    src = tmp_path / "s.png"
    make_image(src, "RGBA")

    def pipe(argv, data):
        stdout = io.TextIOWrapper(io.BytesIO(), write_through=True)
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
        monkeypatch.setattr(sys, "stdout", stdout)
        code = cli.main(argv)
        monkeypatch.undo()
        return code, stdout.buffer.getvalue()

    code, packed = pipe(["compress", "-", "-o", "-"], src.read_bytes())
    assert code == 0 and packed.startswith(b"\x89VAEZ")
    code, png = pipe(["decompress", "-", "-o", "-"], packed)
    assert code == 0
    with Image.open(io.BytesIO(png)) as im:
        assert im.format == "PNG" and im.size == (W, H) and im.mode == "RGBA"
    assert listing(tmp_path) == ["s.png"]
    assert run(capsys, "compress", "-", src)[0] == 2  # '-' only as the sole input


def test_stdin_stdout_subprocess(tmp_path):
    src = tmp_path / "s.png"
    make_image(src)
    proc = subprocess.run([sys.executable, "-m", "cli", "compress", "-", "-o", "-", "-q", "30"],
                          input=src.read_bytes(), capture_output=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.startswith(b"\x89VAEZ")
    image = neuralcodec.decompress(proc.stdout)
    assert image.size == (W, H)


# ---------------------------------------------------------------- info, version, help

def test_info_text_and_json(tmp_path, capsys, vaez_file):
    size = vaez_file.stat().st_size
    code, out, _ = run(capsys, "info", vaez_file)
    assert code == 0
    for needle in ("40x30", "RGB", "quality", "coder", "ZSYM", "YSYM", str(size), "bpp"):
        assert needle in out
    code, out, _ = run(capsys, "info", "--json", vaez_file)
    info = json.loads(out)
    assert (info["width"], info["height"], info["mode"]) == (W, H, "RGB")
    assert info["total_bytes"] == size
    assert info["bpp"] == pytest.approx(8 * size / (W * H))
    assert {"ZSYM", "YSYM"} <= set(info["sections"])
    assert info["model_id"] and len(info["model_digest"]) == 16
    code, out, _ = run(capsys, "info", "--json", vaez_file, vaez_file)
    assert code == 0 and len(json.loads(out)) == 2


def test_info_counts_skipped_sections_as_container_overhead(tmp_path, capsys):
    path = tmp_path / "anc.vaez"
    path.write_bytes(packed({"ZSYM": b"zz", "YSYM": b"yyy", "tEXt": b"hello"}))
    size = path.stat().st_size
    header = formats.header_size(formats.read_header(path))
    # version 2: tag, one-byte length varint, payload, CRC; END is its tag alone
    assert size == header + (9 + 2) + (9 + 3) + (9 + 5) + 4
    code, out, _ = run(capsys, "info", "--json", path)
    info = json.loads(out)
    assert code == 0 and info["sections"] == {"ZSYM": 2, "YSYM": 3} and info["version"] == 2
    assert info["header_bytes"] == header
    assert info["container_overhead_bytes"] == size - header - 5 == 3 * 9 + 4 + 5
    code, out, _ = run(capsys, "info", path)
    assert code == 0 and "ZSYM 2 B, YSYM 3 B" in out
    assert f"header {header} B, container {3 * 9 + 4 + 5} B (section framing" in out
    assert "format:   .vaez version 2" in out


def test_info_failures_summary_and_stdin_rule(tmp_path, capsys, vaez_file):
    bad = tmp_path / "bad.vaez"
    bad.write_bytes(b"not a vaez file")
    code, out, err = run(capsys, "info", vaez_file, bad, tmp_path / "gone.vaez")
    assert code == 1 and "40x30" in out
    errors = [line for line in err.splitlines() if line.startswith("vaez: error:")]
    assert len(errors) == 3 and "2 of 3 files failed: " in errors[-1]
    assert "bad.vaez" in errors[-1] and "gone.vaez" in errors[-1]
    code, _, err = run(capsys, "info", bad)
    assert code == 1 and len(err.strip().splitlines()) == 1  # no summary for one file
    code, _, err = run(capsys, "info", "-", vaez_file)
    assert code == 2
    assert_one_error_line(err, "only input")


def test_vaez_inputs_are_checked_before_being_read_whole(tmp_path, capsys, monkeypatch):
    """info and decompress stop at a bad magic after a few bytes (an endless /dev/zero
    included), and read no more than a file of the header's size can hold."""
    class Endless(io.RawIOBase):
        def __init__(self, head=b""):
            self.head, self.served = head, 0

        def readable(self):
            return True

        def readinto(self, buffer):
            n = len(buffer)
            chunk = (self.head + bytes(n))[:n]
            self.head = self.head[len(chunk):]
            buffer[:n] = chunk
            self.served += n
            return n

    for command in (["info", "-"], ["decompress", "-", "-o", str(tmp_path / "x.png")]):
        zeros = Endless()
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(zeros)))
        code, _, err = run(capsys, *command)
        assert code == 1 and zeros.served < 1 << 20
        assert_one_error_line(err, "bad magic")
    head = packed()[:formats.header_size(formats.read_header(packed()))]
    monkeypatch.setattr(cli, "_VAEZ_SLACK", 1 << 20)      # keep the test's read small
    endless = Endless(head)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(endless)))
    code, _, err = run(capsys, "info", "-")
    assert code == 1 and endless.served < 3 << 20
    assert_one_error_line(err, "goes on past", "more than a 40x30 image needs")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    code, _, err = run(capsys, "compress", "-", "-o", str(tmp_path / "e.vaez"))
    assert code == 1
    assert_one_error_line(err, "<stdin>: empty input")
    assert listing(tmp_path) == []


def test_stdout_failures_are_one_error_line(tmp_path, capsys, monkeypatch, vaez_file):
    class Full(io.TextIOWrapper):
        def flush(self):
            raise OSError(errno.ENOSPC, "No space left on device")

    for argv in (["info", vaez_file], ["info", "--json", vaez_file], ["--version"], ["--help"]):
        monkeypatch.setattr(sys, "stdout", Full(io.BytesIO()))
        code = cli.main([str(a) for a in argv])
        monkeypatch.undo()
        _, err = capsys.readouterr()
        assert code == 1, argv
        assert_one_error_line(err, "<stdout>: no space left on device")
    monkeypatch.setattr(sys, "stdout", None)     # started with stdout closed (`>&-`)
    code = cli.main(["info", str(vaez_file)])
    monkeypatch.undo()
    assert code == 1
    assert_one_error_line(capsys.readouterr()[1], "standard output is closed")


def test_animated_input_keeps_its_first_frame_and_says_so(tmp_path, capsys):
    yy, xx = np.mgrid[0:H, 0:W]
    colours = [(200, 40, 40), (40, 200, 40), (40, 40, 200)]
    frames = [Image.fromarray(np.stack([(xx * 2 + yy + c) % 256 for c in colour], -1).astype(np.uint8))
              for colour in colours]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    code, _, err = run(capsys, "compress", tmp_path / "anim.gif", "-q", "50")
    assert code == 0 and "(first of 3 frames" in err
    decoded = np.asarray(neuralcodec.decompress((tmp_path / "anim.vaez").read_bytes()), dtype=np.float64)
    with Image.open(tmp_path / "anim.gif") as gif:
        errors = []
        for k in range(3):
            gif.seek(k)
            errors.append(((np.asarray(gif.convert("RGB"), dtype=np.float64) - decoded) ** 2).mean())
    assert errors[0] < min(errors[1:]) / 4
    still = tmp_path / "still.png"
    frames[1].save(still)
    code, _, err = run(capsys, "compress", still)
    assert code == 0 and "frames" not in err


def test_failed_run_leaves_no_new_output_directory(tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    code, _, err = run(capsys, "compress", bad, "-o", str(tmp_path / "new") + os.sep)
    assert code == 1 and "bad.png" in err
    assert listing(tmp_path) == ["bad.png"]          # the directory made for the run is gone
    make_image(tmp_path / "ok.png")
    code, _, _ = run(capsys, "compress", bad, tmp_path / "ok.png", "-o", tmp_path / "new")
    assert code == 1 and listing(tmp_path / "new") == ["ok.vaez"]   # kept: it holds a file


def test_huge_target_size_is_a_usage_error(tmp_path, capsys):
    make_image(tmp_path / "a.png")
    code, _, err = run(capsys, "compress", tmp_path / "a.png", "--target-size", "1e400")
    assert code == 2
    assert_one_error_line(err, "too large")
    assert listing(tmp_path) == ["a.png"]


def test_cut_files_are_one_error_line(tmp_path, capsys, vaez_file):
    """A file cut anywhere (just the header, part of it, part of a stream) is refused with
    one line by info and decompress, and decompress writes nothing."""
    data = vaez_file.read_bytes()
    header = formats.header_size(formats.read_header(data))
    folder = tmp_path / "cut"
    folder.mkdir()
    for keep in (5, header - 1, header, header + 3, len(data) - 1):
        cut = folder / "cut.vaez"
        cut.write_bytes(data[:keep])
        for argv in (["info", cut], ["decompress", cut, "-o", folder / "out.png"]):
            code, _, err = run(capsys, *argv)
            assert code == 1, (keep, argv)
            assert_one_error_line(err, "cut.vaez")
        assert listing(folder) == ["cut.vaez"]


def test_version_is_read_from_the_source_and_falls_back_to_importing(monkeypatch, tmp_path):
    assert cli._version() == neuralcodec.__version__
    odd = tmp_path / "__init__.py"
    odd.write_bytes(b"\xff\xfe not the version line\n")
    import importlib.util

    spec = importlib.util.find_spec("neuralcodec")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: type(spec)(name, None, origin=str(odd)))
    assert cli._version() == neuralcodec.__version__   # the slow way: importing it


@pytest.mark.parametrize("exif", [b"Exif\0\0garbage", b"Exif\0\0II*\0"])
def test_decompress_bad_exif_is_one_error_line(tmp_path, capsys, monkeypatch, exif):
    """Pillow raises SyntaxError / struct.error for a malformed EXIF block when it writes TIFF."""
    from formats import to_pil

    class Fake:
        def decompress(self, data):
            pixels = np.zeros((H, W, 3), dtype=np.uint8)
            return to_pil(pixels, None, "RGB", exif=exif)

    monkeypatch.setattr(cli, "_codec", lambda device="cpu": Fake())
    src = tmp_path / "e.vaez"
    src.write_bytes(packed())
    before = listing(tmp_path)
    code, _, err = run(capsys, "decompress", src, "-o", tmp_path / "e.tiff")
    assert code == 1
    assert_one_error_line(err, "e.vaez", "TIFF")
    assert len(err.strip().splitlines()) == 1 and "internal error" not in err
    assert listing(tmp_path) == before


def test_version_and_help(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"vaez {neuralcodec.__version__}" == "vaez 1.5.0"
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "examples:" in out and "vaez compress" in out
    for sub in ("compress", "decompress", "info", "inspect"):
        code, out, _ = run(capsys, sub, "--help")
        assert code == 0 and "examples:" in out


def test_usage_errors(tmp_path, capsys):
    for argv in (["compress", "x.png", "-q", "0"], ["compress", "x.png", "-q", "101"],
                 ["compress", "x.png", "-q", "nan"], ["compress", "x.png", "--coder", "zip"],
                 [], ["frobnicate"]):
        code, _, err = run(capsys, *argv)
        assert code == 2, argv
        assert_one_error_line(err)
        assert len(err.strip().splitlines()) == 1


def test_light_paths_do_not_import_torch_or_numpy(vaez_file):
    """--version, --help and info stay well inside their 0.3 s: not even NumPy loads."""
    script = (
        "import sys, cli\n"
        f"codes = [cli.main(['--version']), cli.main(['--help']), cli.main(['info', {str(vaez_file)!r}]),"
        f" cli.main(['info', '--json', {str(vaez_file)!r}]), cli.main(['compress', '--help'])]\n"
        "assert codes == [0] * 5, codes\n"
        "heavy = [m for m in ('torch', 'neuralcodec.codec', 'numpy') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout
    assert f"vaez {neuralcodec.__version__}" in proc.stdout   # read without importing it


def test_progress_bar_only_on_a_tty(tmp_path, capsys, monkeypatch):
    for name in ("a.png", "b.png"):
        make_image(tmp_path / name)
    code, _, err = run(capsys, "compress", tmp_path / "a.png", tmp_path / "b.png")
    assert code == 0 and "\r" not in err and "[" not in err  # not a terminal: no bar
    monkeypatch.setattr(cli, "_isatty", lambda stream: True)
    code, _, err = run(capsys, "compress", tmp_path / "a.png", tmp_path / "b.png", "--force")
    assert code == 0 and "\r" in err and "] 1/2 " in err and "] 2/2" in err
    assert err.count(" -> ") == 2  # the per-file lines are still there


# ---------------------------------------------------------------- targets and metadata

def _image_with_metadata(path):
    from PIL import ImageCms

    im = make_image(path)
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0132] = "CliMake", "CliModel", "2024:05:06 07:08:09"
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    im.save(path, icc_profile=icc, exif=exif.tobytes())
    return icc


def test_strip_drops_icc_and_exif_default_keeps_them(tmp_path, capsys):
    src = tmp_path / "meta.png"
    icc = _image_with_metadata(src)
    code, _, err = run(capsys, "compress", src, "-o", tmp_path / "kept.vaez")
    assert code == 0, err
    code, _, err = run(capsys, "compress", src, "--strip", "-o", tmp_path / "bare.vaez")
    assert code == 0, err
    _, kept = formats.unpack((tmp_path / "kept.vaez").read_bytes())
    _, bare = formats.unpack((tmp_path / "bare.vaez").read_bytes())
    assert kept["ICCP"] == icc and "EXIF" in kept
    assert "ICCP" not in bare and "EXIF" not in bare
    assert kept["YSYM"] == bare["YSYM"]  # the same pixels were coded
    _, targeted = formats.unpack(neuralcodec.compress(src, target_psnr=1))  # rate control too
    assert targeted["ICCP"] == icc and targeted["EXIF"] == kept["EXIF"]
    # the API: strip=True drops them too; without it the bytes are the plain encoding
    assert "ICCP" not in formats.unpack(neuralcodec.compress(src, strip=True))[1]
    assert neuralcodec.compress(src) == (tmp_path / "kept.vaez").read_bytes()
    # info lists what is there
    code, out, _ = run(capsys, "info", tmp_path / "kept.vaez")
    assert code == 0 and f"icc:      {len(icc)} B" in out
    assert "Make 'CliMake'" in out and "Model 'CliModel'" in out and "2024:05:06" in out
    code, out, _ = run(capsys, "info", "--json", tmp_path / "kept.vaez")
    meta = json.loads(out)["metadata"]
    assert meta["icc_profile"]["bytes"] == len(icc) and meta["exif"]["tags"] == 3
    assert meta["exif"]["Model"] == "CliModel"
    code, out, _ = run(capsys, "info", tmp_path / "bare.vaez")
    assert "metadata: none" in out


def test_target_options(tmp_path, capsys):
    src = tmp_path / "t.png"
    make_image(src, seed=9)
    smallest = len(neuralcodec.compress(src, quality=1))
    target = smallest + 500
    code, _, err = run(capsys, "compress", src, "-o", tmp_path / "s.vaez",
                       "--target-size", f"{target}B", "-q", "40")
    assert code == 0, err
    assert (tmp_path / "s.vaez").stat().st_size <= target
    assert "-q 40 is ignored" in err and "quality " in err and " dB" in err and "target" in err
    code, _, err = run(capsys, "compress", src, "-o", tmp_path / "p.vaez", "--target-psnr", "20")
    assert code == 0 and "target 20 dB" in err
    code, _, err = run(capsys, "compress", src, "-o", tmp_path / "tiny.vaez", "--target-size", "10B")
    assert code == 1 and f"smallest file it can have is {smallest} bytes" in err
    assert not (tmp_path / "tiny.vaez").exists()
    for argv in (["--target-size", "1KB", "--target-psnr", "30"], ["--target-bpp", "0"],
                 ["--target-size", "big"]):
        code, _, err = run(capsys, "compress", src, *argv)
        assert code == 2, argv
        assert_one_error_line(err)


def test_decompress_refuses_a_vaez_output(tmp_path, capsys, vaez_file):
    code, _, err = run(capsys, "decompress", vaez_file, "-o", tmp_path / "again.vaez")
    assert code == 1 and "image extension" in err and not (tmp_path / "again.vaez").exists()


def test_bench_runs_rd_main(tmp_path, capsys, monkeypatch):
    from benchmarks import rd

    seen = {}
    monkeypatch.setattr(rd, "main", lambda argv, prog=None: seen.update(argv=argv, prog=prog) or 0)
    assert run(capsys, "bench", "kodak", "--limit", "2")[0] == 0
    assert seen == {"argv": ["kodak", "--limit", "2"], "prog": "vaez bench"}
    monkeypatch.setattr(rd, "main", lambda argv, prog=None: (_ for _ in ()).throw(
        SystemExit("error: kodak is not a directory")))
    code, _, err = run(capsys, "bench", "kodak")
    assert code == 1 and err == "vaez: error: kodak is not a directory\n"


def test_thread_settings_match_the_library():
    """The CLI sets the same thread-pool settings as `import neuralcodec` (before NumPy loads)."""
    import re

    import neuralcodec

    text = (ROOT / "cli.py").read_text()
    pairs = dict(re.findall(r'\("([A-Z_]+)", "([^"]+)"\)', text.split("PROG = ")[0]))
    assert pairs == neuralcodec.THREAD_SETTINGS
