"""End-to-end behaviour of the codec: round trips, exact latents, determinism, refusals."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

import formats
import neuralcodec
from neuralcodec.codec import Codec

from imagegen import natural_image


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))


@pytest.mark.parametrize("coder", ["constriction", "huffman"])
def test_rgb_round_trip_keeps_size_mode_and_resembles_input(codec, coder):
    img = natural_image(48, 72)
    data = codec.compress(img, quality=90, coder=coder)
    assert data.startswith(formats.MAGIC)
    out = codec.decompress(data)
    assert out.size == (72, 48) and out.mode == "RGB"
    assert psnr(img, np.asarray(out)) > 24
    header = formats.read_header(data)
    assert header.coder == coder and header.quality == 90.0


def test_both_coders_decode_to_identical_latents_and_pixels(codec):
    img = natural_image(64, 64, seed=3)
    a = codec.compress(img, quality=60, coder="constriction")
    b = codec.compress(img, quality=60, coder="huffman")
    la, lb = codec.decode_latents(a), codec.decode_latents(b)
    assert np.array_equal(la[2], lb[2]) and np.array_equal(la[3], lb[3])
    assert np.array_equal(np.asarray(codec.decompress(a)), np.asarray(codec.decompress(b)))


@pytest.mark.parametrize("height,width", [(1, 1), (1, 37), (29, 1), (33, 65), (17, 100)])
def test_odd_sizes(codec, height, width):
    img = natural_image(height, width, seed=height + width)
    out = codec.decompress(codec.compress(img, quality=50))
    assert out.size == (width, height) and out.mode == "RGB"


def test_grayscale_comes_back_grayscale(codec):
    img = natural_image(40, 56, channels=1)
    out = codec.decompress(codec.compress(Image.fromarray(img), quality=80))
    assert out.mode == "L" and out.size == (56, 40)
    assert psnr(img, np.asarray(out)) > 24


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_lossless(codec, mode):
    channels = 4 if mode == "RGBA" else 2
    img = natural_image(30, 45, channels=3, seed=5)
    alpha = (np.arange(30 * 45).reshape(30, 45) * 7 % 256).astype(np.uint8)
    colour = img if mode == "RGBA" else img[:, :, :1]
    arr = np.concatenate([colour, alpha[:, :, None]], axis=2)
    assert arr.shape[2] == channels
    out = codec.decompress(codec.compress(arr, quality=70))
    assert out.mode == mode and out.size == (45, 30)
    assert np.array_equal(np.asarray(out)[:, :, -1], alpha)


def test_path_input_and_module_level_api(tmp_path):
    path = tmp_path / "in.png"
    Image.fromarray(natural_image(24, 40)).save(path)
    data = neuralcodec.compress(str(path), quality=40)
    img = neuralcodec.decompress(data)
    assert isinstance(img, Image.Image) and img.size == (40, 24)


def test_encoding_is_deterministic(codec):
    img = natural_image(40, 40, seed=9)
    assert codec.compress(img, quality=55) == codec.compress(img, quality=55)


def test_file_size_grows_with_quality(codec):
    img = natural_image(96, 128, seed=11)
    sizes = [len(codec.compress(img, quality=q)) for q in (1, 20, 40, 60, 80, 100)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


def test_quality_out_of_range_is_refused(codec):
    with pytest.raises(ValueError, match="quality"):
        codec.compress(natural_image(8, 8), quality=0)
    with pytest.raises(ValueError, match="quality"):
        codec.compress(natural_image(8, 8), quality=101)


def test_unknown_coder_is_refused(codec):
    with pytest.raises(ValueError, match="coder"):
        codec.compress(natural_image(8, 8), coder="zip")


def test_other_weights_are_refused_by_name(codec):
    data = codec.compress(natural_image(16, 16), quality=50)
    header, sections = formats.unpack(data)
    fields = dict(header.__dict__)
    fields.update(model_id="vaez-other", model_digest=b"\x01" * 8)
    forged = formats.pack(formats.VaezHeader(**fields), sections)
    with pytest.raises(formats.VaezError, match="vaez-other"):
        codec.decompress(forged)


def test_files_are_version_2_and_version_1_files_still_decode(codec):
    """The codec writes the compact layout; the same contents in version 1's layout (what
    vaez 1.0 to 1.3 wrote) decode to the same pixels."""
    from dataclasses import replace

    data = codec.compress(natural_image(40, 48, seed=5), quality=30)
    header, sections = formats.unpack(data)
    assert header.version == 2
    old = formats.pack(replace(header, version=1), sections)
    # the header, each section's length (u32 against a 7-bit-per-byte varint), END's length+CRC
    varint_bytes = [max(1, -(-len(p).bit_length() // 7)) for p in sections.values()]
    assert len(sections) == 3 and len(data) < 200
    assert len(old) - len(data) == 84 - formats.header_size(header) + sum(
        4 - n for n in varint_bytes) + 8
    assert np.array_equal(np.asarray(codec.decompress(old)), np.asarray(codec.decompress(data)))


def test_symbol_checksum_catches_a_changed_stream(codec):
    data = codec.compress(natural_image(32, 32, seed=2), quality=80)
    header, sections = formats.unpack(data)
    fields = dict(header.__dict__)
    fields["symbol_crc"] = (header.symbol_crc + 1) & 0xFFFFFFFF
    forged = formats.pack(formats.VaezHeader(**fields), sections)
    with pytest.raises(formats.VaezError, match="checksum"):
        codec.decompress(forged)


@pytest.mark.parametrize("coder", ["constriction", "huffman"])
def test_damaged_streams_are_detected(codec, coder):
    """Flipped bits, cut or appended bytes in the latent streams: a VaezError, unless the
    change only touched the range coder's slack bits (then the latents are exactly right)."""
    data = codec.compress(natural_image(32, 48, seed=4), quality=70, coder=coder)
    header, sections = formats.unpack(data)
    original = codec.decode_latents(data)
    rng = np.random.default_rng(0)
    for trial in range(40):
        damaged = dict(sections)
        streams = [t for t in ("ZSYM", "YSYM", "YSYN") if t in sections]
        tag = streams[trial % len(streams)]
        stream = bytearray(damaged[tag])
        kind = trial % 4
        if kind < 2:
            stream[rng.integers(len(stream))] ^= 1 << int(rng.integers(8))
        elif kind == 2:
            del stream[len(stream) - int(rng.integers(1, 4)):]
        else:
            stream += bytes(rng.integers(0, 256, size=8, dtype=np.uint8))
        damaged[tag] = bytes(stream)
        try:
            latents = codec.decode_latents(formats.pack(header, damaged))
        except formats.VaezError:
            continue
        assert kind < 2, "cut or appended stream bytes must be refused"
        assert np.array_equal(latents[2], original[2]) and np.array_equal(latents[3], original[3])


def test_truncated_file_raises_vaez_error(codec):
    data = codec.compress(natural_image(16, 24), quality=30)
    for cut in range(0, len(data), max(1, len(data) // 50)):
        with pytest.raises(formats.VaezError):
            codec.decompress(data[:cut])


def test_thread_count_does_not_change_latents_or_pixels(tmp_path):
    """Encode with 2 torch threads, decode with 1, in fresh processes."""
    img_path = tmp_path / "in.png"
    Image.fromarray(natural_image(96, 128, seed=21)).save(img_path)
    script = textwrap.dedent("""
        import sys, hashlib, torch, numpy as np
        torch.set_num_threads(int(sys.argv[1]))
        from neuralcodec.codec import Codec
        codec = Codec()
        if sys.argv[2] == "encode":
            open(sys.argv[4], "wb").write(codec.compress(sys.argv[3], quality=65))
        data = open(sys.argv[4], "rb").read()
        _, _, z, y, _, idx = codec.decode_latents(data)
        pixels = np.asarray(codec.decompress(data))
        print(hashlib.sha256(z.tobytes() + y.tobytes() + idx.tobytes()).hexdigest(),
              hashlib.sha256(pixels.tobytes()).hexdigest())
    """)
    out = tmp_path / "x.vaez"

    def run(*args):
        proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.split()

    two = run("2", "encode", str(img_path), str(out))
    one = run("1", "decode", str(img_path), str(out))
    assert two[0] == one[0], "latents differ between thread counts"
    assert two[1] == one[1], "pixels differ between thread counts"


def test_codec_is_shareable_between_threads(codec):
    from concurrent.futures import ThreadPoolExecutor

    images = [natural_image(32, 40, seed=s) for s in range(4)]
    expected = [codec.compress(im, quality=50) for im in images]
    decoded = [np.asarray(codec.decompress(d)) for d in expected]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda im: codec.compress(im, quality=50), images))
        back = list(pool.map(lambda d: np.asarray(codec.decompress(d)), expected))
    assert got == expected
    assert all(np.array_equal(a, b) for a, b in zip(back, decoded))


def test_exif_and_icc_survive_and_orientation_is_applied(codec, tmp_path):
    from PIL import ImageCms

    img = Image.fromarray(natural_image(20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6                    # rotate 90 degrees clockwise to display
    exif[0x010F] = "vaez test camera"   # Make
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    path = tmp_path / "with_meta.png"
    img.save(path, exif=exif.tobytes(), icc_profile=icc)
    out = codec.decompress(codec.compress(str(path), quality=60))
    assert out.size == (20, 30)                      # orientation applied
    assert out.info.get("icc_profile") == icc
    kept = Image.Exif()
    kept.load(out.info["exif"])
    assert kept[0x010F] == "vaez test camera" and kept.get(0x0112, 1) == 1


def test_malformed_exif_section_is_refused(codec):
    data = codec.compress(natural_image(16, 16), quality=50)
    header, sections = formats.unpack(data)
    forged = formats.pack(header, {**sections, "EXIF": b"Exif\0\0garbage-not-tiff"})
    with pytest.raises(formats.VaezError, match="EXIF"):
        codec.decompress(forged)


def test_device_is_checked_and_cpu_codec_is_shared(monkeypatch):
    import torch

    from neuralcodec.codec import check_device, default_codec

    assert default_codec("cpu") is default_codec()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for bad, needle in (("cuda", "not available"), ("warp9", "unknown device"), ("meta", "not supported")):
        with pytest.raises(ValueError, match=needle):
            check_device(bad)
    with pytest.raises(ValueError, match="not available"):
        Codec(device="cuda")
    img = natural_image(24, 40, seed=8)
    data = neuralcodec.compress(img, quality=30, device="cpu")
    assert np.array_equal(np.asarray(neuralcodec.decompress(data, device="cpu")),
                          np.asarray(neuralcodec.decompress(data)))
