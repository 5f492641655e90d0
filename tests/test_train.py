"""Training end to end on a few tiny images: checkpoint, resume, export, and a codec from it."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from imagegen import natural_image
from neuralcodec import export, train
from neuralcodec.codec import Codec


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
