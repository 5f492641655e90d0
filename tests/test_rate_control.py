"""Tests for rate control (neuralcodec/rate_control.py and the target_* arguments).

The model is being retrained, so no test assumes a particular size or PSNR: each one measures
the ends of the quality range first and asks for something in between.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import formats
import neuralcodec
from imagegen import natural_image
from neuralcodec import rate_control
from neuralcodec.rate_control import MAX_ENCODES, PSNR_TOLERANCE, SIZE_TOLERANCE, parse_size

IMAGES = [natural_image(48, 64, 3, seed=1), natural_image(80, 56, 3, seed=2),
          natural_image(64, 64, 1, seed=3)]


def ends(codec, image):
    """(size, psnr) at quality 1 and at quality 100."""
    out = []
    for q in (1, 100):
        data = codec.compress(image, quality=q)
        out.append((len(data), rate_control.psnr(image, codec.decompress(data))))
    return out


def test_parse_size():
    assert parse_size("50KB") == 50_000 and parse_size("1.5MB") == 1_500_000
    assert parse_size("800B") == parse_size(800) == parse_size("800") == 800
    assert parse_size("64KiB") == 65_536 and parse_size("2 mib") == 2 * 1024 ** 2
    assert parse_size("3kb") == 3000
    for bad in ("", "KB", "-5KB", "5XB", "1.5.2MB", 0, "0B", True, None, float("nan"),
                "1e400", "1e308KB", float("inf")):
        with pytest.raises(ValueError):
            parse_size(bad)


@pytest.mark.parametrize("index", range(len(IMAGES)))
def test_size_target_never_larger_and_close(codec, index):
    image = IMAGES[index]
    (low, _), (high, _) = ends(codec, image)
    assert low < high
    target = int(low + 0.4 * (high - low))
    result = neuralcodec.compress_to_target(image, target_size=target, codec=codec)
    assert result.size == len(result.data) <= target
    assert result.size >= (1 - SIZE_TOLERANCE) * target, result
    assert result.met and result.note is None and result.encodes <= MAX_ENCODES
    header = formats.read_header(result.data)
    assert header.quality == result.quality and 1 < result.quality < 100
    assert result.bpp == pytest.approx(8 * result.size / (header.width * header.height))
    # the same through the bytes API and a size string, and through target_bpp
    assert neuralcodec.compress(image, target_size=f"{target}B") == result.data
    by_bpp = neuralcodec.compress_to_target(image, target_bpp=result.bpp, codec=codec)
    assert by_bpp.size <= result.size


def test_size_target_outside_the_range(codec):
    image = IMAGES[0]
    (low, _), (high, _) = ends(codec, image)
    with pytest.raises(ValueError, match=f"smallest file it can have is {low} bytes"):
        neuralcodec.compress(image, target_size=low - 1)
    with pytest.raises(ValueError, match="smallest"):
        neuralcodec.compress(image, target_bpp=8 * (low - 1) / image.shape[0] / image.shape[1])
    big = neuralcodec.compress_to_target(image, target_size=3 * high, codec=codec)
    assert big.quality == 100 and big.size == high and big.met and "quality 100" in big.note


def test_psnr_target_met_with_fewest_bytes(codec):
    image = IMAGES[1]
    (_, psnr_low), (_, psnr_high) = ends(codec, image)
    assert psnr_low < psnr_high
    goal = psnr_low + 0.5 * (psnr_high - psnr_low)
    result = neuralcodec.compress_to_target(image, target_psnr=goal, codec=codec)
    assert result.met and result.psnr >= goal
    # within the tolerance, or a note that says why not (PSNR is not strictly monotonic in
    # quality on tiny images, so a 10-encode search can end just outside the window)
    assert result.psnr <= goal + PSNR_TOLERANCE or (
        "quality step" in result.note or "search stopped" in result.note)
    decoded = codec.decompress(result.data)
    assert rate_control.psnr(image, decoded) == pytest.approx(result.psnr)
    # a lower quality would not do
    lower = codec.compress(image, quality=result.quality - 0.5)
    assert rate_control.psnr(image, codec.decompress(lower)) < goal + PSNR_TOLERANCE


def test_unreachable_psnr_returns_quality_100_with_a_warning(codec):
    image = IMAGES[2]
    with pytest.warns(neuralcodec.TargetWarning, match="quality 100"):
        data = neuralcodec.compress(image, target_psnr=150)
    assert formats.read_header(data).quality == 100
    result = neuralcodec.compress_to_target(image, target_psnr=150, codec=codec)
    assert not result.met and result.quality == 100 and result.encodes == 1


def test_argument_errors(codec):
    image = IMAGES[0]
    with pytest.raises(ValueError, match="at most one target"):
        neuralcodec.compress(image, target_size=1000, target_psnr=30)
    for kwargs in ({"target_bpp": -1}, {"target_psnr": float("inf")}, {"target_size": "lots"}):
        with pytest.raises(ValueError):
            neuralcodec.compress(image, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plain = neuralcodec.compress_to_target(image, quality=40, codec=codec)
    assert plain.target is None and plain.quality == 40 and plain.encodes == 1
    assert plain.data == neuralcodec.compress(image, quality=40)
    assert np.isfinite(plain.psnr)
