"""Tests for the benchmark tools: BD-rate/PCHIP maths, the metrics, and a tiny
end-to-end rate-distortion run on a synthetic image.

They need neither the shared data folder nor a trained model, so they run
anywhere the package's own dependencies are installed.
"""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

try:
    import benchmarks  # noqa: F401
except ImportError:   # plain `pytest` without the repository root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import rd  # noqa: E402
from benchmarks.bdrate import Pchip, bd_rate, bd_rate_result  # noqa: E402
from benchmarks.metrics import MIN_SIDE, ms_ssim, msssim_db, psnr  # noqa: E402
from benchmarks.speed import synthetic_image  # noqa: E402

RATES = [0.12, 0.25, 0.5, 0.9, 1.5]
PSNRS = [27.0, 29.6, 32.4, 35.1, 37.8]


# -- PCHIP ------------------------------------------------------------------------------------

def test_pchip_passes_through_knots_and_reproduces_lines():
    x = np.array([0.0, 1.0, 2.5, 4.0, 7.0])
    p = Pchip(x, 3 * x - 2)
    t = np.linspace(0, 7, 101)
    assert np.allclose(p(t), 3 * t - 2)
    assert p.integrate(0.5, 6.0) == pytest.approx(1.5 * (6.0 ** 2 - 0.5 ** 2) - 2 * 5.5)
    y = np.array([1.0, -2.0, 0.5, 4.0, 3.0])
    assert np.allclose(Pchip(x, y)(x), y)


def test_pchip_is_monotone_on_monotone_data_and_integrals_add_up():
    x = np.array([0.0, 0.3, 1.0, 1.1, 3.0, 4.0])
    y = np.array([0.0, 0.1, 2.0, 2.05, 2.1, 6.0])
    p = Pchip(x, y)
    values = p(np.linspace(0, 4, 2001))
    assert np.all(np.diff(values) >= -1e-12)
    assert p.integrate(0, 4) == pytest.approx(p.integrate(0, 1.05) + p.integrate(1.05, 4))
    with pytest.raises(ValueError):
        p.integrate(-1, 2)
    with pytest.raises(ValueError):
        Pchip([0, 0, 1], [1, 2, 3])


def test_pchip_matches_scipy_when_available():
    interpolate = pytest.importorskip("scipy.interpolate")
    rng = np.random.default_rng(1)
    for _ in range(50):
        x = np.cumsum(rng.uniform(0.1, 2, 7))
        y = rng.normal(size=7)
        ours, ref = Pchip(x, y), interpolate.PchipInterpolator(x, y)
        t = np.linspace(x[0], x[-1], 33)
        assert np.allclose(ours(t), ref(t), atol=1e-12)
        assert ours.integrate(x[1] + 0.05, x[-2]) == pytest.approx(
            ref.integrate(x[1] + 0.05, x[-2]), abs=1e-12)


# -- BD-rate ----------------------------------------------------------------------------------

def test_bd_rate_of_a_curve_against_itself_is_zero():
    assert bd_rate(RATES, PSNRS, RATES, PSNRS) == pytest.approx(0.0, abs=1e-12)


def test_bd_rate_scaled_rates():
    assert bd_rate(RATES, PSNRS, [r / 2 for r in RATES], PSNRS) == pytest.approx(-50.0)
    assert bd_rate(RATES, PSNRS, [r * 2 for r in RATES], PSNRS) == pytest.approx(100.0)


def test_bd_rate_sign_follows_quality_shift_and_order_does_not_matter():
    better = bd_rate(RATES, PSNRS, RATES, [p + 1 for p in PSNRS])
    worse = bd_rate(RATES, PSNRS, RATES, [p - 1 for p in PSNRS])
    assert better < 0 < worse
    shuffled = [3, 0, 4, 1, 2]
    assert bd_rate([RATES[i] for i in shuffled], [PSNRS[i] for i in shuffled],
                   RATES, [p + 1 for p in PSNRS]) == pytest.approx(better)


def test_bd_rate_without_overlap_is_none():
    result = bd_rate_result(RATES, PSNRS, RATES, [p + 20 for p in PSNRS])
    assert result.bd_rate is None and "overlap" in result.note
    assert bd_rate([1.0], [30.0], RATES, PSNRS) is None


# -- metrics ----------------------------------------------------------------------------------

def test_psnr_known_values():
    a = np.full((8, 8, 3), 100, np.uint8)
    assert psnr(a, a) == math.inf
    assert psnr(a, a + 1) == pytest.approx(10 * math.log10(255 ** 2))
    with pytest.raises(ValueError):
        psnr(a, a[:4])


def test_ms_ssim_identity_noise_and_size_limit():
    image = np.asarray(synthetic_image(MIN_SIDE + 31, MIN_SIDE, seed=3))
    assert ms_ssim(image, image) == pytest.approx(1.0, abs=1e-6)
    rng = np.random.default_rng(0)
    scores = []
    for sigma in (2, 8, 25):
        noisy = np.clip(image + rng.normal(0, sigma, image.shape), 0, 255).astype(np.uint8)
        scores.append(ms_ssim(image, noisy))
    assert 1 > scores[0] > scores[1] > scores[2] > 0
    with pytest.raises(ValueError):
        ms_ssim(image[: MIN_SIDE - 1], image[: MIN_SIDE - 1])
    assert msssim_db(0.99) == pytest.approx(20.0)


# -- rd.py ------------------------------------------------------------------------------------

def test_rd_main_runs_a_small_jpeg_sweep(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    synthetic_image(192, 176, seed=5).save(images / "a.png")
    out = tmp_path / "out"
    code = rd.main(["--no-ours", "--baselines", "jpeg", "webp", "--jpeg-qualities", "20", "50",
                    "80", "--webp-qualities", "30", "60", "90", "--quiet",
                    "--out", str(out), str(images)], prog="rd")
    assert code == 0
    printed = capsys.readouterr().out
    assert printed.startswith("$ rd --no-ours")
    assert "vs JPEG (PSNR)" in printed
    result = json.loads((out / "rd.json").read_text())
    jpeg = next(c for c in result["codecs"] if c["name"] == "JPEG")
    assert [p["quality"] for p in jpeg["points"]] == [20, 50, 80]
    assert len(jpeg["per_image"]) == 3
    bpp = [p["bpp"] for p in jpeg["points"]]
    assert bpp == sorted(bpp) and all(p["ms_ssim"] > 0.5 for p in jpeg["points"])
    assert "JPEG" in result["bd_rate"]["WebP"]
    assert (out / "rd.md").exists()


def test_rd_bd_rates_and_anchors(tmp_path):
    points = [{"quality": q, "bpp": r, "psnr": p, "ms_ssim": 1 - 10 ** (-(p - 15) / 10),
               "ms_ssim_db": p - 15, "enc_s": 0.1, "dec_s": 0.1}
              for q, r, p in zip(range(5), RATES, PSNRS)]
    jpeg = {"name": "JPEG", "kind": "baseline", "settings": {}, "points": points}
    ours = {"name": "ours", "kind": "ours", "settings": {},
            "points": [dict(p, bpp=p["bpp"] / 2) for p in points]}
    table = rd.bd_rates([ours, jpeg], ["JPEG"])
    assert table["ours"]["JPEG"]["psnr"]["bd_rate"] == pytest.approx(-50.0)
    assert table["ours"]["JPEG"]["ms_ssim"]["bd_rate"] == pytest.approx(-50.0)
    assert "JPEG" not in table.get("JPEG", {})

    (tmp_path / "x.json").write_text(json.dumps({"name": "X", "results": {
        "bpp": RATES, "psnr-rgb": PSNRS, "ms-ssim-db-rgb": [p - 15 for p in PSNRS]}}))
    anchors = rd.load_anchors(tmp_path)
    assert [a["name"] for a in anchors] == ["X"]
    vs = rd.anchor_bd_rates([ours], anchors)["ours"]["X"]
    assert vs["psnr"]["bd_rate"] == pytest.approx(-50.0)
    assert vs["ms_ssim"]["bd_rate"] == pytest.approx(-50.0)


def test_scripts_skip_our_codec_when_it_is_absent(tmp_path, capsys, monkeypatch):
    from benchmarks import speed

    monkeypatch.setattr(rd, "load_ours", lambda: (None, "neuralcodec has no compress() yet"))
    monkeypatch.setattr(speed, "load_ours", lambda: (None, "neuralcodec has no compress() yet"))
    images = tmp_path / "images"
    images.mkdir()
    synthetic_image(170, 170, seed=2).save(images / "b.png")
    assert rd.main(["--baselines", "jpeg", "--jpeg-qualities", "30", "70", "--quiet",
                    "--out", str(tmp_path / "out"), str(images)], prog="rd") == 0
    assert "ours was skipped: neuralcodec has no compress() yet" in capsys.readouterr().out

    assert speed.main([str(images / "b.png"), "--repeat", "1", "--json",
                       str(tmp_path / "speed.json")], prog="speed") == 0
    printed = capsys.readouterr().out
    assert "ours: not measured" in printed and "| JPEG |" in printed
    assert json.loads((tmp_path / "speed.json").read_text())["pillow"][0]["bpp"] > 0
