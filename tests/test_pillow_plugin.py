"""Tests for the Pillow plugin (neuralcodec/pillow_plugin.py): open, lazy load, save, registration."""
from __future__ import annotations

import functools
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms, UnidentifiedImageError

import formats
import neuralcodec
from imagegen import natural_image
from neuralcodec.codec import Codec

ROOT = Path(__file__).resolve().parent.parent


@functools.cache  # one profile: lcms stamps each new one with the current time
def _metadata():
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x010F] = "PluginMake"
    return icc, exif.tobytes()


@pytest.fixture
def vaez_path(tmp_path, codec):
    icc, exif = _metadata()
    im = Image.fromarray(natural_image(40, 56, 3, seed=7))
    im.info.update(icc_profile=icc, exif=exif)
    path = tmp_path / "plug.vaez"
    path.write_bytes(codec.compress(im, quality=60))
    return path


def test_registered_extension_save_and_mime():
    neuralcodec.register_pillow()  # idempotent
    assert Image.registered_extensions()[".vaez"] == "VAEZ"
    assert "VAEZ" in Image.OPEN and "VAEZ" in Image.SAVE
    assert Image.MIME["VAEZ"].startswith("image/")


def test_open_reads_header_then_decodes_on_load(vaez_path, monkeypatch, codec, tmp_path):
    calls = []
    real = Codec.decompress
    monkeypatch.setattr(Codec, "decompress", lambda self, data: calls.append(1) or real(self, data))
    icc, exif = _metadata()
    with Image.open(vaez_path) as im:
        assert (im.format, im.size, im.mode) == ("VAEZ", (56, 40), "RGB")
        assert im.info["quality"] == 60 and im.info["coder"] in ("constriction", "huffman")
        assert im.info["model"] == codec.model_id
        assert im.info["icc_profile"] == icc and im.info["exif"].endswith(exif[6:])
        assert im.get_format_mimetype() == Image.MIME["VAEZ"]
        assert calls == []  # nothing decoded yet
        pixels = np.asarray(im)
        assert len(calls) == 1
        im.load()
        assert len(calls) == 1  # decoded once
        grey = im.convert("L")
        im.save(tmp_path / "back.png")
        assert im.getexif()[0x010F] == "PluginMake"
    expected = np.asarray(neuralcodec.decompress(vaez_path.read_bytes()))
    assert pixels.shape == (40, 56, 3) and np.array_equal(pixels, expected)
    assert grey.mode == "L" and grey.size == (56, 40)
    with Image.open(tmp_path / "back.png") as png:
        assert np.array_equal(np.asarray(png), expected)


def test_open_and_decode_do_not_import_torch(vaez_path):
    """Decoding on the CPU is NumPy only: neither opening nor loading pixels imports torch."""
    script = (
        "import sys\nfrom PIL import Image\nimport neuralcodec\n"
        f"im = Image.open({str(vaez_path)!r})\n"
        "print('OPEN', im.size, im.mode, 'torch' in sys.modules)\n"
        "im.load()\nprint('LOADED', im.getpixel((0, 0)) is not None, 'torch' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "OPEN (56, 40) RGB False" in proc.stdout and "LOADED True False" in proc.stdout


@pytest.mark.parametrize("mode", ["L", "RGBA"])
def test_save_round_trip_and_parameters(tmp_path, mode):
    channels = {"L": 1, "RGBA": 4}[mode]
    arr = natural_image(32, 48, channels, seed=3)
    im = Image.fromarray(arr, mode)
    low, high = io.BytesIO(), io.BytesIO()
    im.save(low, format="VAEZ", quality=20, coder="huffman")
    im.save(high, format="VAEZ", quality=90)
    header = formats.read_header(low.getvalue())
    assert header.quality == 20 and header.coder == "huffman" and header.mode == mode
    assert formats.read_header(high.getvalue()).quality == 90
    assert len(low.getvalue()) < len(high.getvalue())
    path = tmp_path / f"saved_{mode}.vaez"
    im.save(path)  # the extension picks the format; default quality 75
    assert formats.read_header(path.read_bytes()).quality == 75
    with Image.open(path) as back:
        assert back.mode == mode and back.size == (48, 32)
        if mode == "RGBA":  # alpha is lossless
            assert np.array_equal(np.asarray(back)[..., 3], arr[..., 3])


def test_save_with_target_size(tmp_path):
    im = Image.fromarray(natural_image(48, 64, 3, seed=4))
    smallest = len(neuralcodec.compress(im, quality=1))
    target = smallest + 600
    path = tmp_path / "t.vaez"
    im.save(path, target_size=target)
    assert smallest <= path.stat().st_size <= target


def test_bad_files(vaez_path):
    with pytest.raises(UnidentifiedImageError):
        Image.open(io.BytesIO(formats.MAGIC + bytes(100)))  # magic, but a broken header
    damaged = bytearray(vaez_path.read_bytes())
    damaged[-20] ^= 0xFF  # inside the last stream: the header still reads
    with Image.open(io.BytesIO(bytes(damaged))) as im:
        assert im.size == (56, 40)
        with pytest.raises(OSError, match="cannot decode"):
            im.load()
