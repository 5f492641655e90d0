"""Export a training checkpoint to a compact, offline weights file.

``python -m neuralcodec.export runs/pf3/last.pt neuralcodec/weights/vaez-ls5.npz --decodes old.npz --slices slices.pt``

Float layers are stored as float16 (the quality gains as float32), the hyper-synthesis as
fixed-point integers (see `model/integer_hyper.py`), and the entropy tables as integer
frequencies computed here once, so that no floating-point CDF is ever evaluated at coding time.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch

from .entropy.tables import gaussian_table, quantize_pmf, scale_table, SymbolTable
from .model import ModelConfig, VaezNetwork
from .model.hyperprior import SCALE_COUNT, SCALE_MAX, SCALE_MIN
from .model.integer_hyper import export_gain_offsets, export_layers
from .weights import content_digest, pack_tables

Z_RANGE = 512           # z tables are searched over -Z_RANGE..Z_RANGE
Z_TAIL = 1e-7           # mass left to the escape code on each side
# arrays only the encoder reads: a model that changes nothing else still decodes the old files
ENCODER_ONLY = ("float/analysis.", "float/hyper_analysis.")
PIXELS_ONLY = ("float/postfilter.",)   # acts on decoded pixels, after the latents are fixed


def z_tables(net: VaezNetwork) -> list[SymbolTable]:
    values = torch.arange(-Z_RANGE, Z_RANGE + 2, dtype=torch.float64) - 0.5
    cdf = net.prior.cdf(values.float()).numpy()              # (C, 2*Z_RANGE+2)
    tables = []
    for c in range(cdf.shape[0]):
        edges = cdf[c]
        lo = max(int(np.searchsorted(edges, Z_TAIL)) - 1, 0)
        hi = min(int(np.searchsorted(edges, 1 - Z_TAIL)), len(edges) - 1)
        hi = max(hi, lo + 1)
        pmf = np.diff(edges[lo:hi + 1])
        tail = edges[lo] + 1 - edges[hi]
        tables.append(SymbolTable(offset=lo - Z_RANGE, freqs=quantize_pmf(pmf, tail)))
    return tables


def latent_compatibility(arrays: dict[str, np.ndarray], older: Path) -> list[dict]:
    """``[{"model_id", "digest"}, ...]``: the weights file ``older`` and the models it
    decodes itself, if files written with them decode to the same latents with ``arrays``:
    every array the decoder reads (synthesis, hyper-synthesis, context, tables, gains) is in
    ``arrays`` unchanged, so only the post-filter (`PIXELS_ONLY`: added or retrained; it
    changes pixels, never latents) and encoder-side transforms (`ENCODER_ONLY`: analysis,
    hyper-analysis) may differ. ValueError naming the first array
    that differs (or what is wrong with ``older``) otherwise."""
    try:
        with np.load(older, allow_pickle=False) as archive:
            old = {k: archive[k] for k in archive.files}
        old_meta = json.loads(bytes(old["meta"]).decode())
        old_id = old_meta["model_id"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{older} is not a readable weights file ({type(exc).__name__}: {exc})") from None
    for name, value in old.items():
        if name == "meta" or name.startswith(ENCODER_ONLY + PIXELS_ONLY):
            continue
        new = arrays.get(name)
        if new is None or new.dtype != value.dtype or new.shape != value.shape or not np.array_equal(new, value):
            raise ValueError(f"{older} is not latent-compatible: {name} differs")
    return [{"model_id": old_id, "digest": content_digest(old)[:8].hex()}, *old_meta.get("decodes", [])]


def export(checkpoint: Path, out: Path, model_id: str, notes: dict | None = None,
           decodes: tuple[Path, ...] = (), slices: Path | None = None) -> Path:
    """Write the weights file ``out`` from a training checkpoint. ``decodes``: earlier weights
    files whose `.vaez` files the new model must also decode (see `latent_compatibility`).
    ``slices``: a `train_slices` checkpoint whose channel slices the model gets."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    config = ModelConfig(**state.get("config", {}))
    net = VaezNetwork(config)
    net.load_state_dict(state["model"])
    net.eval()
    arrays: dict[str, np.ndarray] = {}
    for name, tensor in net.state_dict().items():
        if name.startswith(("hyper_synthesis.", "prior.", "context.")):
            continue
        dtype = np.float32 if name.startswith("gains.") else np.float16
        arrays["float/" + name] = tensor.detach().cpu().numpy().astype(dtype)
    layers = export_layers(net.hyper_synthesis)
    for i, (w, b, _, _) in enumerate(layers):
        arrays[f"hyper/{i}/weight"] = w
        arrays[f"hyper/{i}/bias"] = b
    arrays["hyper/gain_offsets"] = export_gain_offsets(net.gains.encoder_log_gain)
    if net.context is not None:
        from .model.integer_context import export_context

        for key, value in export_context(net.context).items():
            arrays[f"context/{key}"] = value
    if slices is not None:
        from .model.integer_slices import export_slices
        from .model.slices import ChannelSlices

        saved = torch.load(slices, map_location="cpu", weights_only=False)
        module = ChannelSlices(saved["order"], saved["bounds"], saved["hidden"])
        module.load_state_dict(saved["state"])
        for key, value in export_slices(module).items():
            arrays[f"slices/{key}"] = value
    y = [gaussian_table(s) for s in scale_table(SCALE_COUNT, SCALE_MIN, SCALE_MAX)]
    for prefix, tables in (("y", y), ("z", z_tables(net))):
        for key, value in pack_tables(tables).items():
            arrays[f"{prefix}/{key}"] = value
    meta = {"model_id": model_id, "config": config.to_dict(), "step": state.get("step"),
            "train_minutes": round(state.get("elapsed", 0) / 60, 1),
            "hyper_layers": [[pad, shuffle] for _, _, pad, shuffle in layers], **(notes or {})}
    if decodes:
        meta["decodes"] = [entry for older in decodes for entry in latent_compatibility(arrays, older)]
    arrays["meta"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, out)
    return out


def write_energy(weights_path: Path) -> Path:
    """Compute the synthesis' impulse energies of the weights file ``weights_path`` and store
    them beside it (`weights.energy_path`), so that encoders read them instead of computing
    them in every process (`Codec._energy`)."""
    from .codec import Codec
    from .weights import energy_path

    codec = Codec(weights_path)
    out = energy_path(weights_path)
    out.unlink(missing_ok=True)                 # compute afresh, never read an older file back
    energy = codec._energy().numpy().astype(np.float32)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez(tmp, digest=np.frombuffer(codec.weights.digest, dtype=np.uint8), energy=energy)
    os.replace(tmp, out)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m neuralcodec.export", description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--model-id", default="vaez-ls5")
    ap.add_argument("--slices", type=Path, metavar="SLICES.pt",
                    help="channel slices trained by python -m neuralcodec.train_slices")
    ap.add_argument("--decodes", type=Path, action="append", default=[], metavar="OLD.npz",
                    help="an earlier weights file whose .vaez files this model decodes too: "
                         "refused unless every array its decoder reads is unchanged here "
                         "(repeatable)")
    args = ap.parse_args(argv)
    try:
        path = export(args.checkpoint, args.out, args.model_id, decodes=tuple(args.decodes),
                      slices=args.slices)
    except ValueError as exc:
        print(f"export: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) and {write_energy(path)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
