"""Load the shipped (or any exported) weights file: everything the codec needs, offline.

A weights file is a NumPy ``.npz`` archive written by `neuralcodec.export`: float16 transform
weights, the integer hyper-synthesis, and the integer frequency tables for z and y. Its
*digest* is a SHA-256 over the sorted array names, dtypes, shapes and bytes (not over the zip
bytes, which depend on timestamps); a `.vaez` file records its first 8 bytes, and decoding with
different weights is refused.
"""
from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .entropy.tables import SymbolTable

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "vaez-ls5.npz"


def content_digest(arrays: dict[str, np.ndarray]) -> bytes:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.digest()


def pack_tables(tables: list[SymbolTable]) -> dict[str, np.ndarray]:
    return {"offsets": np.array([t.offset for t in tables], dtype=np.int32),
            "lengths": np.array([len(t.freqs) for t in tables], dtype=np.int32),
            "freqs": np.concatenate([t.freqs for t in tables]).astype(np.int32)}


def unpack_tables(offsets: np.ndarray, lengths: np.ndarray, freqs: np.ndarray) -> list[SymbolTable]:
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    return [SymbolTable(int(o), freqs[bounds[i]:bounds[i + 1]].astype(np.int64))
            for i, o in enumerate(offsets.tolist())]


@dataclass
class Weights:
    """The raw content of a weights file, grouped by the part of the codec that uses it."""

    model_id: str
    digest: bytes
    config: dict
    float_params: dict[str, np.ndarray]      # state-dict names -> arrays (float16/float32)
    hyper_layers: list                       # for IntegerHyperSynthesis
    gain_offsets: np.ndarray                 # (LEVELS, M) int64, see integer_hyper.scale_index
    y_tables: list[SymbolTable]
    z_tables: list[SymbolTable]
    meta: dict
    context: dict[str, np.ndarray] | None = None   # integer checkerboard context, if the model has one
    slices: dict[str, np.ndarray] | None = None    # integer channel slices, if the model has them
    source: Path | None = None               # the file they were read from


def energy_path(weights_path: Path) -> Path:
    """Where the encoder's impulse energies for the weights file ``weights_path`` are kept:
    ``NAME.energy.npz`` beside ``NAME.npz`` (see `load_energy`)."""
    return Path(weights_path).with_suffix(".energy.npz")


def load_energy(weights: "Weights") -> np.ndarray | None:
    """The synthesis' per-channel impulse energies (`refine.impulse_energy`, float32) stored
    beside the weights file, or None when there is no such file, it is unreadable, or it was
    written for other weights (its digest differs). Only the encoder uses them; storing them
    spares each process the few tenths of a second of computing them."""
    if weights.source is None:
        return None
    try:
        with np.load(energy_path(weights.source), allow_pickle=False) as archive:
            digest = archive["digest"].astype(np.uint8).tobytes()
            energy = archive["energy"].astype(np.float32)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None
    channels = weights.config.get("latent_channels")
    if digest != weights.digest or energy.shape != (channels,) or not np.isfinite(energy).all():
        return None
    return energy


def _check_decodes(decodes) -> None:
    """The ``decodes`` metadata (earlier models whose files these weights read, see
    `neuralcodec.export.latent_compatibility`) must be a list of {model_id, 16-hex digest}."""
    def valid(entry) -> bool:
        if not isinstance(entry, dict) or not isinstance(entry.get("model_id"), str):
            return False
        digest = entry.get("digest")
        return (isinstance(digest, str) and len(digest) == 16
                and all(c in "0123456789abcdef" for c in digest))

    if not isinstance(decodes, list) or not all(valid(e) for e in decodes):
        raise ValueError("weights metadata: 'decodes' must list {model_id, digest} entries")


def load_weights(path: str | Path | None = None) -> Weights:
    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    with np.load(path, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    meta = json.loads(bytes(arrays["meta"]).decode())
    _check_decodes(meta.get("decodes", []))
    float_params = {k[len("float/"):]: v for k, v in arrays.items() if k.startswith("float/")}
    hyper_layers = []
    for i, (pad, shuffle) in enumerate(meta["hyper_layers"]):
        hyper_layers.append((arrays[f"hyper/{i}/weight"], arrays[f"hyper/{i}/bias"], int(pad), bool(shuffle)))
    y_tables = unpack_tables(arrays["y/offsets"], arrays["y/lengths"], arrays["y/freqs"])
    z_tables = unpack_tables(arrays["z/offsets"], arrays["z/lengths"], arrays["z/freqs"])
    context = {k[len("context/"):]: v for k, v in arrays.items() if k.startswith("context/")} or None
    slices = {k[len("slices/"):]: v for k, v in arrays.items() if k.startswith("slices/")} or None
    return Weights(model_id=meta["model_id"], digest=content_digest(arrays)[:8], config=meta["config"],
                   float_params=float_params, hyper_layers=hyper_layers,
                   gain_offsets=arrays["hyper/gain_offsets"].astype(np.int64), y_tables=y_tables,
                   z_tables=z_tables, meta=meta, context=context, slices=slices, source=path)
