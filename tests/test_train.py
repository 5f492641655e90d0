"""Training end to end on a few tiny images: checkpoint, resume, export, and a codec from it."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from imagegen import natural_image
from neuralcodec import export, train
from neuralcodec.codec import Codec
from neuralcodec.weights import DEFAULT_WEIGHTS


def _small_training_set(tmp_path, count: int, first_seed: int) -> list[str]:
    """``count`` tiny photos in ``tmp_path / "photos"``; returns the train arguments every
    quick run shares (no validation split, one thread)."""
    data = tmp_path / "photos"
    data.mkdir()
    for i in range(count):
        Image.fromarray(natural_image(80, 96, seed=first_seed + i)).save(data / f"p{i}.png")
    return ["--data", str(data), "--batch", "2", "--crop", "64", "--val-fraction", "0.0",
            "--threads", "1"]


def test_train_resume_export_and_decode(tmp_path):
    data = tmp_path / "photos"
    (data / "sub").mkdir(parents=True)
    for i in range(4):
        Image.fromarray(natural_image(96, 128, seed=i)).save(data / "sub" / f"p{i}.png")
    run = tmp_path / "run"
    common = ["--data", str(data), "--out", str(run), "--batch", "2", "--crop", "64",
              "--val-fraction", "0.5", "--val-every", "2", "--val-size", "64", "--threads", "1"]
    assert train.main(common + ["--steps", "2"]) == 0
    assert (run / "last.pt").is_file()
    assert train.main(common + ["--steps", "4"]) == 0
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert any(r.get("event") == "klt_init" for r in records)
    assert any(r.get("event") == "resume" and r["step"] == 2 for r in records)
    final = [r for r in records if r.get("event") == "end"][-1]
    assert final["step"] == 4

    weights = export.export(run / "last.pt", tmp_path / "w.npz", "vaez-test")
    codec = Codec(weights)
    img = natural_image(40, 56, seed=7)
    data_bytes = codec.compress(img, quality=50)
    out = codec.decompress(data_bytes)
    assert out.size == (56, 40)
    assert codec.model_id == "vaez-test"
    # a file from other weights is refused
    other = Codec().compress(img, quality=50)
    try:
        codec.decompress(other)
    except ValueError as exc:
        assert "vaez-test" in str(exc)
    else:
        raise AssertionError("a file from other weights decoded")
    assert np.asarray(out).dtype == np.uint8


def test_mixed_precision_and_channels_last_train_and_keep_float32_weights(tmp_path):
    """The GPU options (bfloat16 transforms, channels_last) also run on a CPU, and the
    checkpoint stays float32 so it exports like any other."""
    import torch

    data = tmp_path / "photos"
    data.mkdir()
    for i in range(3):
        Image.fromarray(natural_image(80, 80, seed=10 + i)).save(data / f"p{i}.png")
    run = tmp_path / "run"
    assert train.main(["--data", str(data), "--out", str(run), "--batch", "2", "--crop", "64",
                       "--val-fraction", "0.0", "--threads", "1", "--steps", "2", "--amp",
                       "--channels-last"]) == 0
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    setup = next(r for r in records if r.get("event") == "data")
    assert setup["amp"] is True and setup["channels_last"] is True
    state = torch.load(run / "last.pt", weights_only=False)
    assert state["step"] == 2
    assert all(v.dtype == torch.float32 for v in state["model"].values() if v.is_floating_point())
    weights = export.export(run / "last.pt", tmp_path / "w.npz", "vaez-amp")
    assert Codec(weights).decompress(Codec(weights).compress(natural_image(32, 32), quality=40)).size == (32, 32)


def test_autocast_runs_the_transforms_in_bfloat16_and_the_entropy_model_in_float32():
    import torch

    from neuralcodec.model import VaezNetwork

    net = VaezNetwork()
    net.autocast_dtype = torch.bfloat16
    seen = {}
    first_conv = next(m for m in net.analysis.modules() if isinstance(m, torch.nn.Conv2d))

    def record(name):
        def hook(module, inputs, output):
            seen.setdefault(name, output.dtype)   # returns None: the output is kept
        return hook

    first_conv.register_forward_hook(record("analysis"))
    net.hyper_analysis.register_forward_hook(record("hyper"))
    out = net(torch.rand(1, 3, 64, 64), torch.tensor([3.0]))
    assert seen == {"analysis": torch.bfloat16, "hyper": torch.float32}
    assert out["x_hat"].dtype == torch.float32 and torch.isfinite(out["loss"])


def test_post_filter_trains_alone_on_decoded_crops_and_exports(tmp_path):
    """``--only postfilter`` starts from a checkpoint without a filter, changes nothing but
    the filter, and the exported weights give a codec that filters its output."""
    import torch

    common = _small_training_set(tmp_path, 3, 20)
    base = tmp_path / "base"
    assert train.main(common + ["--out", str(base), "--steps", "2"]) == 0
    run = tmp_path / "pf"
    assert train.main(common + ["--out", str(run), "--steps", "3", "--init", str(base / "last.pt"),
                                "--only", "postfilter", "--postfilter-channels", "8",
                                "--cache", "4", "--patch", "32", "--lr", "1e-2", "--warmup", "1"]) == 0
    before = torch.load(base / "last.pt", weights_only=False)["model"]
    after = torch.load(run / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(k.startswith("postfilter.") for k in after)
    assert after["postfilter.last.weight"].abs().sum() > 0      # it trained (starts at zero)
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert any(r.get("event") == "decoded crops" and r["crops"] == 4 for r in records)
    old = Codec(export.export(base / "last.pt", tmp_path / "base.npz", "vaez-base"))
    codec = Codec(export.export(run / "last.pt", tmp_path / "w.npz", "vaez-pf",
                                decodes=(tmp_path / "base.npz",)))
    assert codec.postfilter is not None and old.postfilter is None
    assert codec.decompress(codec.compress(natural_image(33, 47), quality=40)).size == (47, 33)
    # files of the model it was trained on keep decoding, to the same latents
    old_file = old.compress(natural_image(40, 24, seed=4), quality=60)
    assert np.array_equal(codec.decode_latents(old_file)[3], old.decode_latents(old_file)[3])
    assert codec.decompress(old_file).size == (24, 40)
    assert not Codec().decodes_model("vaez-base", old.weights.digest)
    # weights whose latents differ cannot be declared compatible
    with pytest.raises(ValueError, match="not latent-compatible"):
        export.export(run / "last.pt", tmp_path / "x.npz", "vaez-x", decodes=(DEFAULT_WEIGHTS,))
    assert export.main([str(run / "last.pt"), str(tmp_path / "y.npz"), "--decodes", str(DEFAULT_WEIGHTS)]) == 2
    assert export.main([str(run / "last.pt"), str(tmp_path / "y.npz"), "--decodes", str(tmp_path / "none.npz")]) == 2
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    assert export.main([str(run / "last.pt"), str(tmp_path / "y.npz"), "--decodes", str(tmp_path / "junk.npz")]) == 2
    assert not (tmp_path / "y.npz").exists()
    # what a model decodes carries over to the next one exported from it
    nxt = Codec(export.export(run / "last.pt", tmp_path / "next.npz", "vaez-next", decodes=(tmp_path / "w.npz",)))
    assert nxt.decodes_model("vaez-pf", codec.weights.digest) and nxt.decodes_model("vaez-base", old.weights.digest)
    # a retrained post-filter changes pixels, not latents: its weights still decode the old files
    again = tmp_path / "pf-again"
    assert train.main(common + ["--out", str(again), "--steps", "2", "--init", str(run / "last.pt"),
                                "--only", "postfilter", "--postfilter-channels", "8",
                                "--cache", "2", "--patch", "32", "--lr", "1e-2", "--warmup", "1"]) == 0
    retrained = Codec(export.export(again / "last.pt", tmp_path / "again.npz", "vaez-again",
                                    decodes=(tmp_path / "w.npz",)))
    assert not np.array_equal(retrained.weights.float_params["postfilter.last.weight"],
                              codec.weights.float_params["postfilter.last.weight"])
    assert retrained.decodes_model("vaez-pf", codec.weights.digest)
    assert np.array_equal(retrained.decode_latents(old_file)[3], old.decode_latents(old_file)[3])
    # --only postfilter refuses a start that lacks other parts (they would be random and frozen)
    plain = tmp_path / "plain"
    assert train.main(common + ["--out", str(plain), "--steps", "1", "--context-hidden", "0"]) == 0
    assert train.main(common + ["--out", str(tmp_path / "pf3"), "--steps", "1", "--init", str(plain / "last.pt"),
                                "--only", "postfilter", "--postfilter-channels", "8", "--cache", "2",
                                "--patch", "32"]) == 2
    # a --patch that does not fit the filter's pixel groups is refused
    assert train.main(common + ["--out", str(tmp_path / "bad"), "--steps", "1", "--init",
                                str(base / "last.pt"), "--only", "postfilter",
                                "--postfilter-channels", "8", "--patch", "33"]) == 2



def test_encoder_trains_alone_and_its_weights_decode_the_old_files(tmp_path):
    """``--only encoder --hard-rate`` changes only the analysis and hyper-analysis; exported
    with ``--decodes``, the new weights read the old model's files to the same latents, and
    weights whose decoder side differs are still refused."""
    import torch

    common = _small_training_set(tmp_path, 3, 30)
    base = tmp_path / "base"
    assert train.main(common + ["--out", str(base), "--steps", "2"]) == 0
    run = tmp_path / "enc"
    assert train.main(common + ["--out", str(run), "--steps", "3", "--init", str(base / "last.pt"),
                                "--only", "encoder", "--hard-rate", "--lr", "1e-3",
                                "--warmup", "1"]) == 0
    before = torch.load(base / "last.pt", weights_only=False)["model"]
    after = torch.load(run / "last.pt", weights_only=False)["model"]
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("analysis.", "hyper_analysis.")) for k in changed)
    old = Codec(export.export(base / "last.pt", tmp_path / "base.npz", "vaez-base"))
    new = Codec(export.export(run / "last.pt", tmp_path / "new.npz", "vaez-enc",
                              decodes=(tmp_path / "base.npz",)))
    assert new.weights.digest != old.weights.digest
    old_file = old.compress(natural_image(40, 24, seed=4), quality=60)
    assert np.array_equal(new.decode_latents(old_file)[3], old.decode_latents(old_file)[3])
    assert np.array_equal(np.asarray(new.decompress(old_file)), np.asarray(old.decompress(old_file)))
    assert new.decompress(new.compress(natural_image(33, 47), quality=40)).size == (47, 33)
    # the old decoder does not read the new model's files (it would not know its digest)
    with pytest.raises(ValueError, match="vaez-enc"):
        old.decompress(new.compress(natural_image(16, 16), quality=40))
    # training one part needs a model to start from
    assert train.main(common + ["--out", str(tmp_path / "none"), "--steps", "1", "--only", "encoder"]) == 2
    # the encoder's impulse energies: stored beside the weights for exactly those weights
    from neuralcodec.weights import energy_path, load_energy

    assert load_energy(new.weights) is None
    stored = export.write_energy(tmp_path / "new.npz")
    assert stored == energy_path(tmp_path / "new.npz") and stored.exists()
    fresh = Codec(tmp_path / "new.npz")
    energy = load_energy(fresh.weights)
    assert energy is not None and np.array_equal(energy, new._energy().numpy())
    image = natural_image(40, 56, seed=8)
    assert fresh.compress(image, quality=30) == new.compress(image, quality=30)
    stored.rename(energy_path(tmp_path / "base.npz"))         # other weights' values: ignored
    assert load_energy(Codec(tmp_path / "base.npz").weights) is None


def test_decoder_trains_with_the_encoder_frozen(tmp_path):
    """``--only decoder`` changes the synthesis, entropy model, decoder gains and post-filter,
    and leaves everything the encoder computes before rounding exactly as it was."""
    import torch

    common = _small_training_set(tmp_path, 3, 40)
    base = tmp_path / "base"
    assert train.main(common + ["--out", str(base), "--steps", "2", "--postfilter-channels", "4"]) == 0
    run = tmp_path / "dec"
    assert train.main(common + ["--out", str(run), "--steps", "3", "--init", str(base / "last.pt"),
                                "--only", "decoder", "--hard-rate", "--postfilter-channels", "4",
                                "--lr", "1e-3", "--warmup", "1"]) == 0
    before = torch.load(base / "last.pt", weights_only=False)["model"]
    after = torch.load(run / "last.pt", weights_only=False)["model"]
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    frozen = ("analysis.", "hyper_analysis.", "gains.encoder_log_gain")
    assert not any(k.startswith(frozen) for k in changed)
    for part in ("synthesis.", "hyper_synthesis.", "prior.", "context.", "postfilter.",
                 "gains.decoder_log_gain"):
        assert any(k.startswith(part) for k in changed), part
    assert Codec(export.export(run / "last.pt", tmp_path / "dec.npz", "vaez-dec")).decompress(
        Codec(tmp_path / "dec.npz").compress(natural_image(24, 40), quality=50)).size == (40, 24)


def test_hard_rate_counts_the_rounded_latents():
    """``hard_rate``: the rate of round(y - mean) and round(z), the same on every pass (the
    noisy estimate changes from pass to pass), with gradients reaching the analysis."""
    import torch

    from neuralcodec.model import VaezNetwork
    from neuralcodec.model.network import gaussian_bin_probability

    torch.manual_seed(0)
    net = VaezNetwork()
    x, level = torch.rand(1, 3, 64, 64), torch.tensor([4.0])
    first, second = net(x, level, hard_rate=True), net(x, level, hard_rate=True)
    assert torch.equal(first["bpp"], second["bpp"])
    assert not torch.equal(net(x, level)["bpp"], net(x, level)["bpp"])
    with torch.no_grad():
        y = net.analysis(x) * net.gains.encoder_gain(level)
        z = torch.round(net.hyper_analysis(net.analysis(x)))
        mean, scale = net.entropy_parameters(y, z, level)
        bits = -torch.log2(gaussian_bin_probability(torch.round(y - mean), scale)).sum()
        bits += -torch.log2(net.prior.likelihood(z)).sum()
    assert torch.allclose(first["bpp"][0], bits / (64 * 64), rtol=1e-5)
    first["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.analysis.parameters())


def test_post_filter_crops_can_come_from_the_real_encoder(tmp_path, codec):
    """``--crops-by``: the crops the post-filter learns from are files written by the codec
    (rate-aware rounding and refinement at ``--crops-effort``), decoded up to the filter."""
    import torch

    crops = torch.from_numpy(np.stack([natural_image(48, 64, seed=s) for s in (1, 2)])).permute(0, 3, 1, 2)
    levels, images = train.codec_decode(codec, crops, 1, np.random.default_rng(0))
    assert images.shape == crops.shape and images.dtype == torch.uint8
    for crop, level, image in zip(crops, levels.tolist(), images):
        quality = round(level * 99 / 7 + 1, 2)
        data = codec.compress(crop.permute(1, 2, 0).numpy(), quality=quality, effort=1)
        raw = np.asarray(codec.decompress(data, postfilter=False))
        assert np.array_equal(image.permute(1, 2, 0).numpy(), raw)
        assert not np.array_equal(raw, np.asarray(codec.decompress(data)))   # before the filter
    # and the training run takes them
    common = _small_training_set(tmp_path, 2, 30)
    base = tmp_path / "base"
    assert train.main(common + ["--out", str(base), "--steps", "1"]) == 0
    weights = export.export(base / "last.pt", tmp_path / "base.npz", "vaez-base")
    run = tmp_path / "pf"
    assert train.main(common + ["--out", str(run), "--steps", "2", "--init", str(base / "last.pt"),
                                "--only", "postfilter", "--postfilter-channels", "8", "--cache", "3",
                                "--patch", "32", "--crops-by", str(weights), "--crops-effort", "1"]) == 0
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert any(r.get("event") == "decoded crops" and r["crops"] == 3 for r in records)
    pf = ["--init", str(base / "last.pt"), "--only", "postfilter", "--postfilter-channels", "8",
          "--cache", "2", "--patch", "32"]
    # weights of another model, a bad effort, or the options without --only postfilter: refused
    assert train.main(common + ["--out", str(tmp_path / "x1"), "--steps", "1", *pf,
                                "--crops-by", str(DEFAULT_WEIGHTS)]) == 2
    assert train.main(common + ["--out", str(tmp_path / "x2"), "--steps", "1", *pf,
                                "--crops-by", str(weights), "--crops-effort", "7"]) == 2
    assert train.main(common + ["--out", str(tmp_path / "x3"), "--steps", "1",
                                "--crops-by", str(weights)]) == 2
