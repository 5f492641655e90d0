"""Tests for image loading rules, alpha coding, image encoding and atomic writing."""

import errno
import io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms

from formats import (ImageError, OutputExistsError, VaezError, atomic_write, check_output_path,
                     decode_alpha, encode_alpha, encode_image, image_format, load_image,
                     save_image, to_pil)

RNG = np.random.default_rng(7)


def rgb(h=5, w=7):
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def grey(h=5, w=7):
    return RNG.integers(0, 256, (h, w), dtype=np.uint8)


def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def png_bytes(im, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG", **kw)
    return buf.getvalue()


# ------------------------------------------------------------------ modes

@pytest.mark.parametrize("mode,channels", [("L", 1), ("RGB", 3), ("LA", 2), ("RGBA", 4)])
def test_native_modes_kept(mode, channels):
    arr = RNG.integers(0, 256, (5, 7, channels), dtype=np.uint8)
    im = Image.fromarray(arr[..., 0] if channels == 1 else arr)
    assert im.mode == mode
    for source in (im, png_bytes(im)):
        out = load_image(source)
        assert out.mode == mode
        colour = arr[..., :3] if channels >= 3 else arr[..., 0]
        np.testing.assert_array_equal(out.pixels, colour)
        assert out.pixels.dtype == np.uint8 and out.pixels.flags.c_contiguous
        if mode in ("LA", "RGBA"):
            np.testing.assert_array_equal(out.alpha, arr[..., -1])
        else:
            assert out.alpha is None


def test_bilevel_to_l():
    im = Image.fromarray(np.array([[True, False], [False, True]]))
    assert im.mode == "1"
    out = load_image(im)
    assert out.mode == "L"
    np.testing.assert_array_equal(out.pixels, [[255, 0], [0, 255]])


def test_palette_without_and_with_transparency():
    im = Image.fromarray(rgb()).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    out = load_image(im)
    assert out.mode == "RGB" and out.alpha is None
    np.testing.assert_array_equal(out.pixels, np.asarray(im.convert("RGB")))
    im.info["transparency"] = 0
    out = load_image(png_bytes(im, transparency=0))
    assert out.mode == "RGBA"
    idx = np.asarray(im)
    np.testing.assert_array_equal(out.alpha, np.where(idx == 0, 0, 255))


def test_pa_to_rgba():
    im = Image.new("PA", (3, 2))
    assert load_image(im).mode == "RGBA"


@pytest.mark.parametrize("mode", ["CMYK", "YCbCr", "LAB", "HSV", "RGBX"])
def test_other_colour_modes_to_rgb(mode):
    im = Image.fromarray(rgb()).convert(mode) if mode != "RGBX" else Image.new("RGBX", (7, 5), (9, 8, 7, 0))
    out = load_image(im)
    assert out.mode == "RGB" and out.pixels.shape == (5, 7, 3) and out.alpha is None
    np.testing.assert_array_equal(out.pixels, np.asarray(im.convert("RGB")))


def test_mismatched_icc_dropped_on_colour_conversion():
    im = Image.new("CMYK", (4, 3), (0, 255, 0, 0))
    im.info["icc_profile"] = srgb_icc()  # an RGB profile does not describe CMYK data
    out = load_image(im)
    assert out.mode == "RGB" and out.icc_profile is None
    np.testing.assert_array_equal(out.pixels[0, 0], [255, 0, 255])


def test_lab_with_lab_profile_is_colour_managed():
    lab_profile = ImageCms.createProfile("LAB")
    srgb = ImageCms.createProfile("sRGB")
    lab = ImageCms.profileToProfile(Image.fromarray(rgb()), srgb, lab_profile, outputMode="LAB")
    lab.info["icc_profile"] = ImageCms.ImageCmsProfile(lab_profile).tobytes()
    out = load_image(lab)
    expected = ImageCms.profileToProfile(lab, lab_profile, srgb, outputMode="RGB")
    assert out.mode == "RGB" and out.icc_profile is None
    np.testing.assert_array_equal(out.pixels, np.asarray(expected))


def test_sixteen_bit_to_l():
    values = np.array([[0, 1, 128, 129], [32767, 32768, 65534, 65535]], dtype=np.uint16)
    expected = np.round(values.astype(np.float64) * 255 / 65535).astype(np.uint8)
    im = Image.fromarray(values)
    assert im.mode == "I;16"
    out = load_image(im)
    assert out.mode == "L"
    np.testing.assert_array_equal(out.pixels, expected)
    np.testing.assert_array_equal(load_image(png_bytes(im)).pixels, expected)
    np.testing.assert_array_equal(load_image(values).pixels, expected)
    np.testing.assert_array_equal(load_image(values.astype(">u2")).pixels, expected)


def test_int32_clipped_then_scaled():
    values = np.array([[-5, 0, 257, 65535, 70000]], dtype=np.int32)
    im = Image.fromarray(values)
    assert im.mode == "I"
    out = load_image(im)
    assert out.mode == "L"
    np.testing.assert_array_equal(out.pixels, [[0, 0, 1, 255, 255]])


def test_float_clipped_and_rounded():
    values = np.array([[-3.0, 0.49, 0.5, 127.6, 254.5, 300.0, np.nan]], dtype=np.float32)
    im = Image.fromarray(values)
    assert im.mode == "F"
    np.testing.assert_array_equal(load_image(im).pixels, [[0, 0, 1, 128, 255, 255, 0]])


def test_premultiplied_is_unpremultiplied():
    data = bytes([100, 50, 0, 200, 10, 20, 30, 0, 255, 128, 0, 255])  # 3 RGBa pixels
    im = Image.frombytes("RGBa", (3, 1), data)
    out = load_image(im)
    assert out.mode == "RGBA"
    np.testing.assert_array_equal(out.alpha, [[200, 0, 255]])
    np.testing.assert_array_equal(out.pixels, [[[128, 64, 0], [0, 0, 0], [255, 128, 0]]])
    im = Image.frombytes("La", (2, 1), bytes([64, 128, 255, 255]))
    out = load_image(im)
    assert out.mode == "LA"
    np.testing.assert_array_equal(out.pixels, [[128, 255]])
    np.testing.assert_array_equal(out.alpha, [[128, 255]])


def test_animated_first_frame(tmp_path):
    frames = [Image.new("RGB", (4, 4), c) for c in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    out = load_image(path)
    assert tuple(out.pixels[0, 0]) == (255, 0, 0)
    with Image.open(path) as im:
        im.seek(1)
        assert tuple(load_image(im).pixels[0, 0]) == (255, 0, 0)
        assert im.tell() == 1  # caller's image left on its frame


# --------------------------------------------------------------- metadata

@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_exif_orientation_applied(tmp_path, fmt):
    arr = np.zeros((2, 4, 3), dtype=np.uint8)
    arr[0, 0] = 255  # white top-left corner marks the orientation
    exif = Image.Exif()
    exif[0x0112] = 6  # stored image must be rotated 90 degrees clockwise for display
    exif[0x010F] = "vaez-test"  # Make, to check other tags survive
    path = tmp_path / f"o.{fmt.lower()}"
    Image.fromarray(arr).save(path, format=fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {}))
    out = load_image(path)
    assert out.pixels.shape == (4, 2, 3)
    assert out.pixels[0, 1].min() > 200  # the marked corner is now top-right
    assert out.exif.startswith(b"Exif\0\0")
    restored = Image.Exif()
    restored.load(out.exif)
    assert restored[0x0112] == 1 and restored[0x010F] == "vaez-test"


def test_exif_without_orientation_passed_through(tmp_path):
    exif = Image.Exif()
    exif[0x010F] = "cam"
    path = tmp_path / "e.png"
    Image.fromarray(rgb()).save(path, exif=exif)
    out = load_image(path)
    assert out.pixels.shape == (5, 7, 3)
    assert out.exif == exif.tobytes()


def test_icc_profile_kept(tmp_path):
    icc = srgb_icc()
    path = tmp_path / "icc.png"
    Image.fromarray(rgb()).save(path, icc_profile=icc)
    assert load_image(path).icc_profile == icc
    im = Image.fromarray(rgb())
    im.info["icc_profile"] = icc
    assert load_image(im).icc_profile == icc
    assert load_image(rgb()).icc_profile is None


# ------------------------------------------------------------------ numpy

@pytest.mark.parametrize("shape,mode", [((5, 7), "L"), ((5, 7, 1), "L"), ((5, 7, 2), "LA"),
                                        ((5, 7, 3), "RGB"), ((5, 7, 4), "RGBA")])
def test_numpy_shapes(shape, mode):
    arr = RNG.integers(0, 256, shape, dtype=np.uint8)
    before = arr.copy()
    out = load_image(arr)
    assert out.mode == mode
    np.testing.assert_array_equal(arr, before)
    c = shape[2] if len(shape) == 3 else 1
    colour = arr[..., :3] if c >= 3 else arr.reshape(5, 7, c)[..., 0]
    np.testing.assert_array_equal(out.pixels, colour)
    assert not np.shares_memory(out.pixels, arr)
    if mode in ("LA", "RGBA"):
        np.testing.assert_array_equal(out.alpha, arr[..., -1])
    out.pixels[...] = 0  # the result may be modified without touching the input
    np.testing.assert_array_equal(arr, before)


def test_numpy_bool_and_non_contiguous():
    out = load_image(np.array([[True, False]]))
    assert out.mode == "L"
    np.testing.assert_array_equal(out.pixels, [[255, 0]])
    arr = rgb(6, 8)[::2, ::-1]
    out = load_image(arr)
    assert out.pixels.flags.c_contiguous
    np.testing.assert_array_equal(out.pixels, arr)


@pytest.mark.parametrize("arr,message", [
    (np.zeros((4, 4), dtype=np.float32), "dtype"),
    (np.zeros((4, 4), dtype=np.int16), "dtype"),
    (np.zeros((4, 4, 5), dtype=np.uint8), "shape"),
    (np.zeros((2, 2, 2, 2), dtype=np.uint8), "shape"),
    (np.zeros((4,), dtype=np.uint8), "shape"),
    (np.zeros((0, 4), dtype=np.uint8), "empty"),
    (np.zeros((4, 4, 0), dtype=np.uint8), "empty"),
])
def test_numpy_rejections(arr, message):
    with pytest.raises(ImageError, match=message):
        load_image(arr)


def test_size_limit_checked_before_decoding():
    arr = np.broadcast_to(np.uint8(0), (1, 70000))  # no memory behind it
    with pytest.raises(ImageError, match="exceeds the limit"):
        load_image(arr)


# ------------------------------------------------------------- bad input

def png_with_size(width, height) -> bytes:
    """A 1x1 PNG whose IHDR claims another size (the pixel data is never reached)."""
    data = bytearray(png_bytes(Image.new("L", (1, 1))))
    struct.pack_into(">II", data, 16, width, height)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    return bytes(data)


@pytest.mark.parametrize("size", [(70000, 1), (20000, 20000), (60000, 60000)])
def test_oversized_file_refused_without_decoding(size):
    with pytest.raises(ImageError, match="<bytes>"):
        load_image(png_with_size(*size))


def test_missing_corrupt_and_odd_inputs(tmp_path):
    with pytest.raises(ImageError, match="nope.png"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="directory"):
        load_image(tmp_path)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"this is not an image")
    with pytest.raises(ImageError, match="bad.png"):
        load_image(bad)
    cut = tmp_path / "cut.png"
    cut.write_bytes(png_bytes(Image.fromarray(rgb(64, 64)))[:120])
    with pytest.raises(ImageError, match="cut.png"):
        load_image(str(cut))
    with pytest.raises(ImageError):
        load_image(b"")
    with pytest.raises(ImageError):
        load_image(Image.new("RGB", (0, 0)))
    with pytest.raises(ImageError):
        load_image(12)


def test_file_and_pil_inputs_unchanged(tmp_path):
    path = tmp_path / "in.png"
    Image.fromarray(rgb()).save(path)
    before = path.read_bytes()
    load_image(path)
    assert path.read_bytes() == before
    im = Image.new("RGBa", (3, 3), (10, 20, 30, 40))
    snapshot = im.tobytes()
    load_image(im)
    assert im.mode == "RGBa" and im.tobytes() == snapshot


# --------------------------------------------------------- alpha / to_pil

def test_alpha_round_trip_exact():
    alpha = RNG.integers(0, 256, (37, 53), dtype=np.uint8)
    data = encode_alpha(alpha)
    np.testing.assert_array_equal(decode_alpha(data, 53, 37), alpha)
    assert encode_alpha(alpha) == data


def test_decode_alpha_rejects_bad_payloads():
    data = encode_alpha(grey())
    with pytest.raises(VaezError, match="7x6"):
        decode_alpha(data, 7, 6)
    with pytest.raises(VaezError):
        decode_alpha(data[:40], 7, 5)
    with pytest.raises(VaezError):
        decode_alpha(b"garbage", 7, 5)
    with pytest.raises(VaezError, match="RGB"):
        decode_alpha(png_bytes(Image.fromarray(rgb())), 7, 5)
    with pytest.raises(ValueError):
        encode_alpha(np.zeros((2, 2), dtype=np.uint16))


def test_to_pil_restores_modes_and_metadata():
    pixels, alpha = rgb(), grey()
    im = to_pil(pixels, alpha, "RGBA", icc_profile=b"icc", exif=b"Exif\0\0x")
    assert im.mode == "RGBA" and im.info["icc_profile"] == b"icc" and im.info["exif"] == b"Exif\0\0x"
    np.testing.assert_array_equal(np.asarray(im)[..., 3], alpha)
    assert to_pil(grey(), alpha, "LA").mode == "LA"
    assert to_pil(grey(), None, "L").mode == "L"
    assert to_pil(pixels, None, "RGB").mode == "RGB"
    for args in [(pixels, None, "RGBA"), (pixels, alpha, "RGB"), (grey(), None, "RGB"),
                 (pixels.astype(np.float32), None, "RGB"), (pixels, None, "P")]:
        with pytest.raises(ValueError):
            to_pil(*args)


def test_load_to_pil_round_trip():
    arr = RNG.integers(0, 256, (5, 7, 4), dtype=np.uint8)
    out = load_image(arr)
    np.testing.assert_array_equal(np.asarray(to_pil(out.pixels, out.alpha, out.mode)), arr)


# ------------------------------------------------------------------ save

def test_save_image_formats_and_metadata(tmp_path):
    icc = srgb_icc()
    im = to_pil(rgb(), None, "RGB", icc_profile=icc)
    save_image(im, tmp_path / "out.png")
    save_image(im, tmp_path / "noext")
    save_image(im, str(tmp_path / "out.jpg"))
    with Image.open(tmp_path / "out.png") as a, Image.open(tmp_path / "noext") as b:
        assert a.format == b.format == "PNG" and a.info["icc_profile"] == icc
        np.testing.assert_array_equal(np.asarray(a), np.asarray(im))
    with Image.open(tmp_path / "out.jpg") as c:
        assert c.format == "JPEG" and c.info["icc_profile"] == icc
    assert sorted(os.listdir(tmp_path)) == ["noext", "out.jpg", "out.png"]


def test_save_image_failure_leaves_nothing_behind(tmp_path):
    target = tmp_path / "out.jpg"
    target.write_bytes(b"old")
    with pytest.raises(ImageError, match="out.jpg"):
        save_image(to_pil(rgb(), grey(), "RGBA"), target)  # JPEG cannot store alpha
    assert os.listdir(tmp_path) == ["out.jpg"] and target.read_bytes() == b"old"
    with pytest.raises(ImageError, match="extension"):
        save_image(to_pil(rgb(), None, "RGB"), tmp_path / "out.nosuchformat")
    with pytest.raises(ImageError, match="does not exist"):
        save_image(to_pil(rgb(), None, "RGB"), tmp_path / "missing" / "out.png")
    assert os.listdir(tmp_path) == ["out.jpg"]


def test_save_image_without_force_keeps_existing_file(tmp_path):
    target = tmp_path / "out.png"
    target.write_bytes(b"old")
    with pytest.raises(ImageError, match="already exists"):
        save_image(to_pil(rgb(), None, "RGB"), target, force=False)
    assert os.listdir(tmp_path) == ["out.png"] and target.read_bytes() == b"old"
    save_image(to_pil(rgb(), None, "RGB"), target)  # force is the default
    with Image.open(target) as im:
        assert im.format == "PNG"


def test_image_format_from_extension():
    assert image_format("a.png") == image_format("noext") == image_format("-") == "PNG"
    assert image_format("A.JPG") == image_format("b.jpeg") == "JPEG"
    assert image_format("c.webp") == "WEBP" and image_format("d.tif") == "TIFF"
    for bad in ("e.nosuchformat", "f.txt"):
        with pytest.raises(ImageError, match="extension"):
            image_format(bad)


def test_encode_image_is_lossless_where_possible():
    im = to_pil(rgb(9, 11), grey(9, 11), "RGBA")
    for fmt in ("PNG", "WEBP", "TIFF"):
        buf = io.BytesIO()
        encode_image(im, fmt, buf)
        with Image.open(io.BytesIO(buf.getvalue())) as back:
            assert back.format == fmt
            np.testing.assert_array_equal(np.asarray(back.convert("RGBA")), np.asarray(im))


@pytest.mark.parametrize("exif", [b"Exif\0\0garbage", b"Exif\0\0II*\0"],
                         ids=["not-tiff", "truncated-ifd"])
def test_encode_image_bad_exif_is_one_image_error(exif):
    # Pillow parses EXIF when writing TIFF and raises SyntaxError / struct.error
    im = to_pil(rgb(), None, "RGB", exif=exif)
    with pytest.raises(ImageError, match="cannot save a RGB image as TIFF") as info:
        encode_image(im, "TIFF", io.BytesIO())
    assert "\n" not in str(info.value)


def test_encode_image_passes_disk_errors_through():
    class Full(io.BytesIO):
        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OSError) as info:
        encode_image(to_pil(rgb(), None, "RGB"), "PNG", Full())
    assert info.value.errno == errno.ENOSPC and not isinstance(info.value, ImageError)


# ------------------------------------------------------------ atomic write

def test_atomic_write_creates_and_never_overwrites_without_force(tmp_path):
    target = tmp_path / "f.bin"
    atomic_write(target, lambda f: f.write(b"one"))
    assert target.read_bytes() == b"one"
    with pytest.raises(OutputExistsError) as info:
        atomic_write(target, lambda f: f.write(b"two"))
    assert info.value.filename == str(target) and isinstance(info.value, FileExistsError)
    assert target.read_bytes() == b"one"
    atomic_write(target, lambda f: f.write(b"two"), force=True)
    assert target.read_bytes() == b"two"
    assert os.listdir(tmp_path) == ["f.bin"]


def test_atomic_write_race_is_caught_by_the_hard_link(tmp_path):
    """Another writer creates the file after the check: the link step refuses to replace it."""
    target = tmp_path / "f.bin"

    def sneaky(f):
        target.write_bytes(b"theirs")
        f.write(b"ours")

    with pytest.raises(OutputExistsError):
        atomic_write(target, sneaky)
    assert target.read_bytes() == b"theirs" and os.listdir(tmp_path) == ["f.bin"]


def test_atomic_write_without_hard_links(tmp_path, monkeypatch):
    def no_links(src, dst, *args, **kwargs):
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), src)

    monkeypatch.setattr(os, "link", no_links)
    target = tmp_path / "f.bin"
    atomic_write(target, lambda f: f.write(b"one"))
    assert target.read_bytes() == b"one"

    def sneaky(f):
        target.write_bytes(b"theirs")
        f.write(b"ours")

    target.unlink()
    with pytest.raises(OutputExistsError):
        atomic_write(target, sneaky)
    assert target.read_bytes() == b"theirs" and os.listdir(tmp_path) == ["f.bin"]


def test_atomic_write_failures_leave_nothing_behind(tmp_path, monkeypatch):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")

    def broken(f):
        f.write(b"partial")
        raise ValueError("encoder failed")

    with pytest.raises(ValueError, match="encoder failed"):
        atomic_write(target, broken, force=True)
    def interrupted(f):
        f.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, interrupted, force=True)

    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError) as info:
        atomic_write(target, lambda f: f.write(b"new"), force=True)
    assert info.value.errno == errno.ENOSPC
    assert os.listdir(tmp_path) == ["f.bin"] and target.read_bytes() == b"old"


def test_atomic_write_refuses_directories_and_special_files(tmp_path):
    (tmp_path / "dir").mkdir()
    with pytest.raises(IsADirectoryError):
        atomic_write(tmp_path / "dir", lambda f: f.write(b"x"), force=True)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        atomic_write(tmp_path / "missing" / "f.bin", lambda f: f.write(b"x"))
    (tmp_path / "plain").write_bytes(b"")
    with pytest.raises(NotADirectoryError, match="is not a directory"):
        atomic_write(tmp_path / "plain" / "f.bin", lambda f: f.write(b"x"))
    check_output_path(tmp_path / "new.bin")  # fine: nothing there yet
    expected = ["dir", "plain"]
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "fifo")
        expected.append("fifo")
        with pytest.raises(OSError, match="not a regular file") as info:
            atomic_write(tmp_path / "fifo", lambda f: f.write(b"x"), force=True)
        assert not isinstance(info.value, FileExistsError)
    assert sorted(os.listdir(tmp_path)) == sorted(expected)
