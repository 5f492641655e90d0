"""What does bit-exact decoding cost in rate? ``python benchmarks/integer_cost.py DIR [--limit N]``

For each image and quality, three sizes of the latent y (bits per pixel):
* ``float``: ideal code length with the float hyper-synthesis and continuous scales (what
  training optimises; not decodable across machines),
* ``integer``: ideal code length with the exported integer hyper-synthesis and the 64-entry
  scale table (what the codec uses),
* ``stream``: the actual constriction stream (header and z excluded).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout too

from neuralcodec.codec import Codec  # noqa: E402
from neuralcodec.entropy.tables import scale_table  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--limit", type=int, default=4)
    ap.add_argument("--qualities", type=float, nargs="+", default=[10, 50, 90])
    args = ap.parse_args(argv)
    print("command:", " ".join(["python"] + sys.argv))
    from neuralcodec.model.network import gaussian_bin_probability
    from neuralcodec.model.quality import level_from_quality

    codec = Codec()
    net = codec.net
    # the float hyper-synthesis is not shipped; rebuild it from the integer weights
    from neuralcodec.model.integer_hyper import ACT_BITS, WEIGHT_BITS
    with torch.no_grad():
        for conv, (w, b, _, _) in zip(net.hyper_synthesis.convs, codec.weights.hyper_layers):
            conv.weight.copy_(torch.from_numpy(w.astype(np.float64) / (1 << WEIGHT_BITS)))
            conv.bias.copy_(torch.from_numpy(b.astype(np.float64) / (1 << (WEIGHT_BITS + ACT_BITS))))
        if net.context is not None:   # likewise the context model
            arrays = codec.weights.context
            ctx = net.context
            ctx.neighbours.weight.copy_(torch.from_numpy(arrays["neighbours"][:, None] / (1 << WEIGHT_BITS)))
            ctx.mix.weight.copy_(torch.from_numpy(arrays["mix_weight"][:, :, None, None] / (1 << WEIGHT_BITS)))
            ctx.mix.bias.copy_(torch.from_numpy(arrays["mix_bias"] / (1 << (WEIGHT_BITS + ACT_BITS))))
            ctx.head.weight.copy_(torch.from_numpy(arrays["head_weight"][:, :, None, None] / (1 << WEIGHT_BITS)))
            ctx.head.bias.copy_(torch.from_numpy(arrays["head_bias"] / (1 << (WEIGHT_BITS + ACT_BITS))))
    paths = sorted(p for p in args.dir.iterdir() if p.suffix.lower() in (".png", ".webp", ".jpg"))[:args.limit]
    rows = {q: [] for q in args.qualities}
    from PIL import Image
    import formats
    for path in paths:
        img = Image.open(path).convert("RGB")
        w, h = img.size
        for q in args.qualities:
            data = codec.compress(img, quality=q)
            _, sections = formats.unpack(data)
            _, _, z, y_sym, mean_i, idx = codec.decode_latents(data)
            x = torch.from_numpy(np.asarray(img)).permute(2, 0, 1)[None].float() / 255
            ph, pw = y_sym.shape[1] * 8 - h, y_sym.shape[2] * 8 - w
            x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate")
            level = torch.tensor([level_from_quality(q)])
            with torch.no_grad():
                y = net.analysis(x) * net.gains.encoder_gain(level)
                mean_f, scale_f = net.entropy_parameters(y, torch.from_numpy(z[None]).float(), level,
                                                         hard=True)
                bits_f = -torch.log2(gaussian_bin_probability(torch.round(y - mean_f), scale_f)).sum()
                scale_i = torch.from_numpy(scale_table()[idx])
                bits_i = -torch.log2(gaussian_bin_probability(torch.from_numpy(y_sym).double(), scale_i)).sum()
            rows[q].append((float(bits_f) / (w * h), float(bits_i) / (w * h), (len(sections["YSYM"]) + len(sections.get("YSYN", b""))) * 8 / (w * h)))
    print("| quality | float bpp | integer+table bpp | stream bpp | integer cost |")
    print("|---:|---:|---:|---:|---:|")
    for q, vals in rows.items():
        f, i, s = np.mean(vals, axis=0)
        print(f"| {q:g} | {f:.4f} | {i:.4f} | {s:.4f} | {100 * (s / f - 1):+.2f}% |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
