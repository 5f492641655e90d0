"""Export a training checkpoint to a compact, offline weights file.

``python -m neuralcodec.export runs/v1/last.pt neuralcodec/weights/vaez-ls2.npz``

Float layers are stored as float16 (the quality gains as float32), the hyper-synthesis as
fixed-point integers (see `model/integer_hyper.py`), and the entropy tables as integer
frequencies computed here once, so that no floating-point CDF is ever evaluated at coding time.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch

from .entropy.tables import gaussian_table, quantize_pmf, scale_table, SymbolTable
from .model import ModelConfig, VaezNetwork
from .model.hyperprior import SCALE_COUNT, SCALE_MAX, SCALE_MIN
from .model.integer_hyper import export_gain_offsets, export_layers
from .weights import pack_tables

Z_RANGE = 512           # z tables are searched over -Z_RANGE..Z_RANGE
Z_TAIL = 1e-7           # mass left to the escape code on each side


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


def export(checkpoint: Path, out: Path, model_id: str, notes: dict | None = None) -> Path:
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
    y = [gaussian_table(s) for s in scale_table(SCALE_COUNT, SCALE_MIN, SCALE_MAX)]
    for prefix, tables in (("y", y), ("z", z_tables(net))):
        for key, value in pack_tables(tables).items():
            arrays[f"{prefix}/{key}"] = value
    meta = {"model_id": model_id, "config": config.to_dict(), "step": state.get("step"),
            "train_minutes": round(state.get("elapsed", 0) / 60, 1),
            "hyper_layers": [[pad, shuffle] for _, _, pad, shuffle in layers], **(notes or {})}
    arrays["meta"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, out)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m neuralcodec.export", description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--model-id", default="vaez-ls2")
    args = ap.parse_args(argv)
    path = export(args.checkpoint, args.out, args.model_id)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
