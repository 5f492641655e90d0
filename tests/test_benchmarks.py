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


def _cubic_integral(p, a, b):
    """Simpson's rule on one cubic piece: exact for cubics, independent of Pchip.integrate."""
    return (b - a) / 6 * (p(a) + 4 * p((a + b) / 2) + p(b))


@pytest.mark.parametrize("x,y,slopes", [
    # y = x**3 on uniform knots: harmonic-mean slopes inside, three-point formula at the ends
    # (its value -2 at the left end has the wrong sign and becomes 0)
    ([0, 1, 2, 3], [0, 1, 8, 27], [0, 7 / 4, 133 / 13, 25]),
    # uneven spacing: weights w1 = 2h1 + h0, w2 = h1 + 2h0 in the harmonic mean
    ([0, 1, 3], [0, 2, 3], [5 / 2, 6 / 7, 0]),
    # a local maximum stays flat; the end slope next to a sign change is capped at 3 * secant
    ([0, 1, 1.1], [0, 1, 0], [3, 0, -11]),
    # two points: the straight line
    ([1, 4], [2, -4], [-2, -2]),
])
def test_pchip_slopes_and_integrals_in_closed_form(x, y, slopes):
    p = Pchip(x, y)
    assert np.allclose(p.d, slopes, rtol=0, atol=1e-12)
    assert np.allclose(p(x), y, rtol=0, atol=1e-12)
    x, y = np.asarray(x, float), np.asarray(y, float)
    for k in range(len(x) - 1):
        h = x[k + 1] - x[k]
        # Hermite cubic: midpoint value and exact integral from the knot values and slopes
        mid = (y[k] + y[k + 1]) / 2 + h * (slopes[k] - slopes[k + 1]) / 8
        assert p((x[k] + x[k + 1]) / 2) == pytest.approx(mid, abs=1e-12)
        area = h * (y[k] + y[k + 1]) / 2 + h * h * (slopes[k] - slopes[k + 1]) / 12
        assert p.integrate(x[k], x[k + 1]) == pytest.approx(area, abs=1e-12)


def test_pchip_random_curves_are_smooth_and_integrate_exactly():
    rng = np.random.default_rng(1)
    for _ in range(50):
        x = np.cumsum(rng.uniform(0.1, 2, 7))
        y = rng.normal(size=7)
        p = Pchip(x, y)
        assert np.allclose(p(x), y, atol=1e-12)
        # C1: second-order one-sided derivatives on both sides of each interior knot agree
        knots, e = x[1:-1], 1e-5
        left = (3 * p(knots) - 4 * p(knots - e) + p(knots - 2 * e)) / (2 * e)
        right = (-3 * p(knots) + 4 * p(knots + e) - p(knots + 2 * e)) / (2 * e)
        assert np.allclose(left, p.d[1:-1], rtol=0, atol=1e-6)
        assert np.allclose(right, p.d[1:-1], rtol=0, atol=1e-6)
        # monotone between knots wherever the data are
        for k in range(6):
            t = np.linspace(x[k], x[k + 1], 41)
            steps = np.diff(p(t)) * np.sign(y[k + 1] - y[k])
            assert np.all(steps >= -1e-12)
        a, b = x[1] + 0.05, x[-2]
        pieces = [a, *x[2:-2], b]
        expected = sum(_cubic_integral(p, lo, hi) for lo, hi in zip(pieces[:-1], pieces[1:]))
        assert p.integrate(a, b) == pytest.approx(expected, abs=1e-12)


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


def test_rd_effort_levels_give_their_own_curves_and_a_bd_rate_against_effort_0(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    synthetic_image(192, 176, seed=7).save(images / "a.png")
    synthetic_image(176, 168, seed=8).convert("P").save(images / "b.png")   # non-RGB input
    out = tmp_path / "out"
    assert rd.main(["--effort", "0", "1", "--qualities", "30", "60", "90", "--coder", "huffman",
                    "--baselines", "jpeg", "--jpeg-qualities", "30", "60", "90", "--quiet",
                    "--out", str(out), str(images)], prog="rd") == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "rd.json").read_text())
    assert result["efforts"] == [0, 1] and result["selection"] == {"kind": "directory"}
    ours = {c["name"]: c for c in result["codecs"] if c["kind"] == "ours"}
    # the default effort (1) is plain "ours"; others are named by their level
    assert set(ours) == {"ours effort=0", "ours"}
    assert ours["ours effort=0"]["settings"]["effort"] == 0 and ours["ours"]["settings"]["effort"] == 1
    for record in ours.values():
        assert [p["quality"] for p in record["points"]] == [30, 60, 90]
        assert len(record["per_image"]) == 6 and all(p["images"] == 2 for p in record["points"])
        assert set(result["bd_rate"][record["name"]]) == {"JPEG"}
        assert all(math.isfinite(p["ms_ssim_db"]) for p in record["points"])
    vs0 = result["effort_bd_rate"]["ours"]["ours effort=0"]
    assert set(result["effort_bd_rate"]) == {"ours"}
    for metric in ("psnr", "ms_ssim"):
        assert vs0[metric]["bd_rate"] is not None, vs0[metric]["note"]
        assert -60 < vs0[metric]["bd_rate"] < 20
    # the report: both curves in every table, and the effort-vs-effort line
    assert "| ours effort=0 | coder=huffman, effort=0, model " in printed
    assert "| ours | coder=huffman, effort=1, model " in printed
    assert "## Encoder effort: BD-rate against effort 0" in printed
    row = next(line for line in printed.splitlines() if line.startswith("| ours | ours effort=0 |"))
    assert f"{vs0['psnr']['bd_rate']:+.1f}%" in row and f"{vs0['ms_ssim']['bd_rate']:+.1f}%" in row
    assert "## ours: per-quality points" in printed
    assert "## ours effort=0: per-quality points" in printed
    assert "Validation split" not in printed
    body = printed.split("\n", 1)[1].split("\nWrote ")[0]
    assert (out / "rd.md").read_text().split("\n", 2)[2] == body


def test_rounding_sweep_reports_each_strength_against_the_first(tmp_path, capsys):
    from benchmarks import rounding
    from neuralcodec.codec import default_codec

    images = tmp_path / "images"
    images.mkdir()
    synthetic_image(96, 128, seed=3).save(images / "a.png")
    before = default_codec().rounding_strength
    assert rounding.main(["--strengths", "0", "9", "--qualities", "20", "50", "80",
                          "--json", str(tmp_path / "r.json"), str(images)], prog="rounding") == 0
    assert default_codec().rounding_strength == before          # the codec is left as it was
    result = json.loads((tmp_path / "r.json").read_text())
    first, second = result["rows"]
    assert (first["strength"], second["strength"]) == (0, 9) and "bd" not in first
    assert all(len(row["bpp"]) == 3 and len(row["psnr"]) == 3 for row in result["rows"])
    # the stronger price on bits spends fewer bits at every quality
    assert all(b < a for a, b in zip(first["bpp"], second["bpp"]))
    assert second["bd"]["psnr"]["bd_rate"] is not None
    printed = capsys.readouterr().out
    row = next(line for line in printed.splitlines() if line.startswith("| 9 |"))
    assert f"{second['bd']['psnr']['bd_rate']:+.2f}%" in row


def test_rd_without_effort_0_has_no_effort_table_and_rejects_unknown_efforts(capsys):
    ours = {"name": "ours effort=2", "kind": "ours", "settings": {"coder": "auto", "effort": 2},
            "points": [{"quality": q, "bpp": r, "psnr": p, "ms_ssim": math.nan,
                        "ms_ssim_db": math.nan, "enc_s": 0.2, "dec_s": 0.1}
                       for q, r, p in zip(range(5), RATES, PSNRS)]}
    assert rd.effort_bd_rates([ours]) == {}
    results = {"command": "rd x", "directory": "/x", "images": [{"name": "a"}],
               "environment": {"versions": {}}, "codecs": [ours], "bd_rate": {},
               "effort_bd_rate": {}, "anchor_bd_rate": {}}
    text = rd.report(results)
    assert "## Encoder effort" not in text and "| ours effort=2 | coder=auto, effort=2, model ?" in text
    assert rd.ours_name("auto", rd.DEFAULT_EFFORT) == "ours" and rd.ours_name("auto", 0) == "ours effort=0"
    assert rd.ours_name("huffman", 3, 2) == "ours[huffman] effort=3"
    with pytest.raises(SystemExit):
        rd._parser("rd").parse_args(["x", "--effort", "4"])
    assert capsys.readouterr().err.count("invalid choice") == 1
    assert rd._parser("rd").parse_args(["x"]).effort == [rd.DEFAULT_EFFORT] == [1]


def test_rd_validation_split_uses_exactly_the_training_hold_out(tmp_path, capsys):
    from neuralcodec.train import is_validation

    train = tmp_path / "train"
    (train / "sub").mkdir(parents=True)
    fraction = 0.2
    paths = []
    for i in range(40):     # odd sizes and modes, some in a subfolder, as training folders have
        path = train / ("sub" if i % 3 == 0 else "") / f"photo{i:02d}.png"
        mode = ("RGB", "L", "RGBA", "P")[i % 4]
        synthetic_image(96 + i, 80 + 2 * i, seed=i).convert(mode).save(path)
        paths.append(path)
    (train / "notes.txt").write_text("not an image")
    expected = sorted(p for p in paths if is_validation(p, fraction))
    assert 0 < len(expected) < len(paths)      # the names above put some on each side
    assert any(p.parent.name == "sub" for p in expected)

    selected, total = rd.validation_split(train, fraction)
    assert selected == expected and total == len(paths)

    out = tmp_path / "out"
    assert rd.main([str(train), "--validation-split", "--val-fraction", str(fraction),
                    "--no-ours", "--baselines", "jpeg", "--jpeg-qualities", "40", "80",
                    "--quiet", "--out", str(out)], prog="rd") == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    saved = (out / "rd.md").read_text().splitlines()
    assert lines[0].startswith("$ rd ") and saved[0] == lines[0] and saved[1] == ""
    # the first line after the command says what these images are
    assert lines[1] == saved[2]
    assert lines[1].startswith(f"**Validation split of a training folder, not Kodak:** "
                               f"{len(expected)} of the {len(paths)} images under ")
    assert "is_validation" in lines[1] and f"fraction {fraction:g}" in lines[1]
    result = json.loads((out / "rd.json").read_text())
    assert [im["name"] for im in result["images"]] == [
        p.relative_to(train).as_posix() for p in expected]
    assert result["selection"]["kind"] == "validation-split"
    assert (result["selection"]["selected"], result["selection"]["total"]) == (len(expected), len(paths))
    assert result["selection"]["val_fraction"] == fraction
    jpeg = next(c for c in result["codecs"] if c["name"] == "JPEG")
    assert len(jpeg["per_image"]) == 2 * len(expected)
    # the default fraction is training's default
    assert rd._parser("rd").parse_args(["x"]).val_fraction == 0.05


def test_scripts_skip_our_codec_when_it_is_unusable(tmp_path, capsys, monkeypatch):
    import neuralcodec.codec

    from benchmarks import speed

    def no_weights(*args, **kwargs):   # default_codec(device="cpu")
        raise FileNotFoundError("weights file not found: nowhere.npz")

    monkeypatch.setattr(neuralcodec.codec, "default_codec", no_weights)
    images = tmp_path / "images"
    images.mkdir()
    synthetic_image(170, 170, seed=2).save(images / "b.png")
    assert rd.main(["--baselines", "jpeg", "--jpeg-qualities", "30", "70", "--quiet",
                    "--out", str(tmp_path / "out"), str(images)], prog="rd") == 0
    printed = capsys.readouterr().out
    assert "ours was skipped: the codec failed on a warm-up image: FileNotFoundError: " \
           "weights file not found: nowhere.npz" in printed

    assert speed.main([str(images / "b.png"), "--repeat", "1", "--json",
                       str(tmp_path / "speed.json")], prog="speed") == 0
    printed = capsys.readouterr().out
    assert "ours: not measured (the codec failed: FileNotFoundError" in printed
    assert "| JPEG |" in printed and "Cold start" not in printed  # no cold runs without a codec
    assert "Machine speed at the start / end of the run" in printed
    result = json.loads((tmp_path / "speed.json").read_text())
    assert result["pillow"][0]["bpp"] > 0 and "cold" not in result
    for moment in ("before", "after"):     # the machine's speed, to compare runs by
        assert result["machine"][moment]["sgemm_gflops"] > 0 and result["machine"][moment]["zlib_mb_per_s"] > 0


def test_ours_is_measured_with_stage_timings():
    from benchmarks import speed

    image = synthetic_image(96, 72, seed=4)
    record = rd.measure_ours([("s.png", image)], [40, 80], coder="huffman", progress=False)
    assert record["settings"]["model_id"] and record["settings"]["version"]
    bpp = [p["bpp"] for p in record["points"]]
    assert len(bpp) == 2 and 0 < bpp[0] < bpp[1]
    timed = speed.time_ours(image, quality=60, coder="huffman", repeat=1)
    assert {"analysis", "hyper", "entropy", "other"} <= set(timed["encode_stages"])
    assert {"entropy", "hyper", "synthesis", "postfilter", "other"} <= set(timed["decode_stages"])
    assert timed["stage_source"] == "neuralcodec.codec.default_codec().timings"
    assert timed["bpp"] > 0 and timed["psnr"] > 10
    apart = timed["decode_measured_apart"]
    assert set(apart) == {"container parse", "PNG write"} and all(v > 0 for v in apart.values())

    rows = speed.stage_throughput(timed, speed.count_macs(96, 72), peak_gflops=70)
    assert [(r["direction"], r["stage"]) for r in rows] == [
        ("encode", "analysis"), ("encode", "hyper"), ("encode", "total"),
        ("decode", "hyper"), ("decode", "synthesis"), ("decode", "postfilter"), ("decode", "total")]
    assert all(r["macs"] > 0 and r["gmac_s"] > 0 for r in rows)
    assert rows[-1]["share_of_reference"] == pytest.approx(rows[-1]["gmac_s"] / 35)


# -- speed.py: arithmetic, cold CLI, report -----------------------------------------------------

def test_count_macs_matches_the_architecture_and_scales_with_pixels():
    from benchmarks import speed
    from neuralcodec.model import ModelConfig, VaezNetwork

    net = VaezNetwork(ModelConfig())        # untrained: MACs depend on shapes only
    small, large = speed.count_macs(64, 64, net), speed.count_macs(128, 64, net)
    assert all(isinstance(n, int) and n > 0 for n in small["macs"].values())
    assert set(small["macs"]) == set(speed.MAC_PARTS) - {"postfilter"}    # this one has none
    assert all(large["macs"][k] == 2 * small["macs"][k] for k in small["macs"])
    assert large["per_pixel"] == small["per_pixel"]
    # closed forms for the default config (M=192, hidden 128, Cz=96): MACs per output
    # position times output positions per pixel (y at 1/64, the hyper grids at 1/256, 1/1024)
    block = (192 * 128 * 9 + 128 * 192) / 64
    assert small["per_pixel"] == {
        "analysis": 3 * 16 * 16 * 192 / 64 + 2 * block,
        "hyper_analysis": 128 * 192 * 9 / 64 + 128 * 128 * 25 / 256 + 96 * 128 * 25 / 1024,
        "hyper_synthesis": (128 * 96 * 9 + 384 * 128 * 9) / 1024 + 256 * 96 * 9 / 256 + 384 * 64 / 64,
        "synthesis": 3 * block + 192 * 192 * 9 / 64}
    padded = speed.count_macs(50, 40, net)            # padded to 64x64: same work, fewer pixels
    assert padded["macs"] == small["macs"] and (padded["padded_width"], padded["padded_height"]) == (64, 64)
    assert padded["per_pixel"]["synthesis"] == pytest.approx(small["per_pixel"]["synthesis"] * 4096 / 2000)
    assert not any(m._forward_hooks for m in net.modules())      # hooks removed
    # the post-filter works on 2x2 pixel groups: 12 -> 32 -> 32 -> 12 channels, 3x3 each
    filtered = speed.count_macs(64, 64, VaezNetwork(ModelConfig(postfilter_channels=32, postfilter_scale=2)))
    assert filtered["per_pixel"]["postfilter"] == (12 * 32 + 32 * 32 + 32 * 12) * 9 / 4


def test_cli_runner_keeps_the_exit_status_and_sees_torch(tmp_path):
    from benchmarks import speed

    (tmp_path / "cli.py").write_text(
        "import sys\n"
        "def main():\n"
        "    if sys.argv[1:] == ['pretend-torch']:\n"
        "        sys.modules['torch'] = sys\n"
        "    print('out')\n"
        "    return 3\n")
    env = dict(speed._fresh_env(), PYTHONPATH=str(tmp_path))
    with_torch = speed.run_cli_once(["pretend-torch"], env, tmp_path)
    without = speed.run_cli_once(["other"], env, tmp_path)
    assert with_torch["returncode"] == without["returncode"] == 3
    assert with_torch["torch_imported"] is True and without["torch_imported"] is False
    assert with_torch["seconds"] > 0 and "error" in without


def test_cold_cli_runs_the_real_version_command_without_torch():
    from benchmarks import speed

    result = speed.cold_cli(b"", runs=1, commands=("--version",))
    (row,) = result["commands"]
    assert "error" not in row, row
    assert row["command"] == "vaez --version" and row["torch_imported"] is False
    assert row["seconds"] > 0 and result["python_floor_s"] > 0


def test_speed_report_renders_stages_arithmetic_and_cold_cli():
    from benchmarks import speed

    ours = {"name": "ours", "setting": "quality=75, coder=auto", "bpp": 1.5, "psnr": 32.9,
            "encode_s": 0.4, "decode_s": 0.5,
            "encode_stages": {"analysis": 0.2, "hyper": 0.15, "other": 0.05},
            "decode_stages": {"hyper": 0.1, "synthesis": 0.3, "other": 0.1},
            "decode_measured_apart": {"container parse": 0.001, "PNG write": 0.1}}
    pixels = 768 * 512
    macs = {"width": 768, "height": 512, "padded_width": 768, "padded_height": 512,
            "macs": {"analysis": pixels * 10_000, "hyper_analysis": pixels * 5_000,
                     "hyper_synthesis": pixels * 2_000, "synthesis": pixels * 17_000}}
    macs["per_pixel"] = {k: n / pixels for k, n in macs["macs"].items()}
    cold_cli = {"runs": 1, "file_bytes": 1234, "python_floor_s": 0.02, "commands": [
        {"name": "decompress", "command": "vaez decompress FILE.vaez -o OUT.png", "target_s": 2.5,
         "torch_allowed": True, "seconds": 2.0, "torch_imported": True, "meets_target": True},
        {"name": "--version", "command": "vaez --version", "target_s": 0.3,
         "torch_allowed": False, "seconds": 0.4, "torch_imported": False, "meets_target": False},
        {"name": "info", "command": "vaez info FILE.vaez", "target_s": 0.3,
         "torch_allowed": False, "error": "exit status 1: boom"}]}
    results = {"command": "speed", "image": "fake", "width": 768, "height": 512, "repeat": 1,
               "environment": {"versions": {"torch_threads": 2}}, "ours": ours,
               "peak_gflops": 70.0, "macs": macs,
               "throughput": speed.stage_throughput(ours, macs, 70.0), "cold_cli": cold_cli}
    text = speed.report(results)
    assert "| decode | PNG write (measured apart; after decompress) | 100.0 | 20% |" in text
    assert "| decode | **total + PNG write** | **600.0** | 120% |" in text
    assert "container parse (measured apart; inside 'other')" in text
    assert ("MACs per image pixel: analysis 10,000, hyper_analysis 5,000, hyper_synthesis 2,000, "
            "synthesis 17,000.") in text
    # decode synthesis: 17,000 MACs/pixel * 393,216 pixels / 0.3 s = 22.3 GMAC/s = 64% of 35
    assert "| decode | synthesis | 17,000 | 300.0 | 22.3 | 64% | float32 |" in text
    # decode hyper: 2,000 * 393,216 / 0.1 s = 7.9 GMAC/s = 22% of 35, ~45% of the float64 peak
    assert "| decode | hyper | 2,000 | 100.0 | 7.9 | 22% | float64 integer h_s (float64 peak" in text
    assert "~45% of it" in text
    assert "float64 peak is about half" in text and "share of 35 GMAC/s" in text
    assert "| vaez decompress FILE.vaez -o OUT.png | 2000.0 | ≤ 2.5 s | yes | yes |" in text
    assert "| vaez --version | 400.0 | ≤ 0.3 s, no torch | no | **no** |" in text
    assert "| vaez info FILE.vaez | failed: exit status 1: boom |" in text
    assert "(1,234 bytes)" in text


def test_start_command_prints_the_command_line(capsys):
    from benchmarks.common import start_command

    args, command = start_command(rd._parser, ["imgs", "--limit", "2"], None, "benchmarks.rd")
    assert args.directory == "imgs" and args.limit == 2
    assert command == "python -m benchmarks.rd imgs --limit 2"
    assert capsys.readouterr().out == f"$ {command}\n"


def test_versus_times_two_checkouts_in_turns(tmp_path):
    """benchmarks/versus.py loads two checkouts' codecs into one process (here this one
    twice, in a fresh interpreter) and prints both directions; a folder that is not a vaez
    checkout is refused."""
    import subprocess

    from imagegen import natural_image
    from PIL import Image

    root = Path(__file__).resolve().parents[1]
    Image.fromarray(natural_image(48, 64, seed=3)).save(tmp_path / "a.png")
    proc = subprocess.run([sys.executable, "benchmarks/versus.py", str(root), str(tmp_path / "a.png"),
                           "--repeat", "2"], capture_output=True, text=True, cwd=root, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for heading in ("## decode (2 calls each", "## encode (2 calls each"):
        assert heading in proc.stdout
    rows = [line for line in proc.stdout.splitlines() if line.startswith(("| other", "| this"))]
    assert len(rows) == 4 and all("synthesis" in r or "analysis" in r for r in rows)
    proc = subprocess.run([sys.executable, "benchmarks/versus.py", str(tmp_path), str(tmp_path / "a.png")],
                          capture_output=True, text=True, cwd=root, timeout=120)
    assert proc.returncode == 2 and "is not a vaez checkout" in proc.stderr


def test_channel_context_experiment_runs_both_designs(tmp_path, capsys):
    """benchmarks/channel_context.py on a few small photos: latents collected once (cached),
    each design trained a few steps and measured on the held-out crops."""
    from PIL import Image

    from benchmarks import channel_context
    from imagegen import natural_image

    for i in range(6):
        Image.fromarray(natural_image(256, 288, seed=60 + i)).save(tmp_path / f"img{i}.png")
    cache = tmp_path / "latents.pt"
    common = [str(tmp_path), "--crops", "4", "--steps", "2", "--eval-fraction", "0.5",
              "--threads", "1", "--cache", str(cache), "--slices", "8,32"]
    assert channel_context.main(common + ["--design", "add", "--kernel", "1", "--scale-only"]) == 0
    assert cache.exists()
    assert channel_context.main(common + ["--design", "replace"]) == 0
    out = capsys.readouterr().out
    for design in ("design add", "design replace"):
        block = out[out.index(design):]
        rows = [line for line in block.splitlines() if line.startswith("| ") and "-" in line][:5]
        whole = [r for r in rows if r.split("|")[2].strip() == "1-100"]
        assert whole and whole[0].rstrip(" |").endswith("%")   # a measured change
