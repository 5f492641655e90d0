"""Train the vaez network: ``python -m neuralcodec.train --data DIR --out runs/NAME``.

Random crops from every image under DIR (held-out validation split chosen by a hash of the file
name, so it never changes), a rate-distortion loss over the whole continuous quality range,
resumable checkpoints (``last.pt``, written atomically), and a JSON-lines log of training loss
and validation bpp/PSNR measured with hard rounding (what a real file would cost, minus the
container). Uses CUDA when available. A fresh run starts from an 8x8 colour KLT (see
`neuralcodec.model.transforms.init_from_klt`) so it is a working transform coder from step 0.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .model import ModelConfig, VaezNetwork
from .model.network import gaussian_bin_probability
from .model.quality import LEVELS
from .model.transforms import init_from_klt
from .model.network import init_entropy_model

IMAGE_SUFFIXES = {".png", ".webp", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm"}


def is_validation(path: Path, fraction: float) -> bool:
    """Deterministic split: the same file is always on the same side."""
    digest = hashlib.sha1(path.name.encode()).digest()
    return int.from_bytes(digest[:4], "little") / 2**32 < fraction


def list_images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


class CropSampler:
    """Random crops (with flips) from images held in memory as uint8 arrays."""

    def __init__(self, images: list[np.ndarray], crop: int, seed: int):
        self.images = [im for im in images if min(im.shape[:2]) >= crop]
        weights = np.array([im.shape[0] * im.shape[1] for im in self.images], dtype=np.float64)
        self.weights = weights / weights.sum()   # bigger photos give more crops
        self.crop = crop
        self.rng = np.random.default_rng(seed)

    def batch(self, size: int) -> torch.Tensor:
        out = np.empty((size, self.crop, self.crop, 3), dtype=np.uint8)
        for i, k in enumerate(self.rng.choice(len(self.images), size=size, p=self.weights)):
            im = self.images[k]
            top = self.rng.integers(0, im.shape[0] - self.crop + 1)
            left = self.rng.integers(0, im.shape[1] - self.crop + 1)
            patch = im[top:top + self.crop, left:left + self.crop]
            if self.rng.random() < 0.5:
                patch = patch[:, ::-1]
            out[i] = patch
        return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0)


@torch.no_grad()
def hard_decode(net: VaezNetwork, x: torch.Tensor, level: torch.Tensor):
    """What a real file of crops ``x`` (N, 3, H, W) at ``level`` (N,) gives: the synthesis'
    8-bit image in [0, 1] (hard rounding throughout, before any post-filter; the post-filter's
    training input) and the bits per crop estimated from the model's probabilities."""
    y_unit = net.analysis(x)
    y = y_unit * net.gains.encoder_gain(level)
    z_hat = torch.round(net.hyper_analysis(y_unit))
    z_bits = -torch.log2(net.prior.likelihood(z_hat).clamp_min(1e-9)).sum(dim=(1, 2, 3))
    mean, scale = net.entropy_parameters(y, z_hat, level, hard=True)
    q = torch.round(y - mean)
    y_bits = -torch.log2(gaussian_bin_probability(q, scale)).sum(dim=(1, 2, 3))
    x_hat = net.synthesis((q + mean) * net.gains.decoder_gain(level))
    return torch.round(x_hat.clamp(0, 1) * 255) / 255, y_bits + z_bits


def _weights_mismatch(exported: dict, net: VaezNetwork) -> str | None:
    """What differs between a weights file's float tensors (stored in float16) and ``net``'s,
    other than the post-filter (the part being trained); None when they agree."""
    state = net.state_dict()
    for name, value in exported.items():
        if name.startswith("postfilter."):
            continue
        mine = state.get(name)
        if mine is None or tuple(mine.shape) != value.shape:
            return f"{name} is missing or has another shape"
        mine = mine.detach().double().cpu().numpy()
        if not np.allclose(mine, value.astype(np.float64), rtol=2e-3, atol=1e-4):
            return f"{name} differs"
    return None


def codec_decode(codec, crops: torch.Tensor, effort: int, rng):
    """Crops (N, 3, H, W) uint8 through a real file each, at random qualities: (levels (N,),
    the synthesis' 8-bit images before the post-filter (N, 3, H, W) uint8)."""
    from .model.constants import level_from_quality

    levels, images = [], []
    for crop in crops:
        quality = round(float(rng.uniform(1.0, 100.0)), 2)
        data = codec.compress(crop.permute(1, 2, 0).numpy(), quality=quality, effort=effort)
        pixels = np.asarray(codec.decompress(data, postfilter=False))
        images.append(torch.from_numpy(pixels.copy()).permute(2, 0, 1))
        levels.append(level_from_quality(quality))
    return torch.tensor(levels, dtype=torch.float32), torch.stack(images)


class DecodedCrops:
    """Crops decoded once by the frozen codec at random levels (uint8, in memory), from which
    the post-filter trains on random aligned sub-crops: no transform runs per step."""

    def __init__(self, net: VaezNetwork, sampler: CropSampler, count: int, patch: int, align: int,
                 device, batch: int = 8, codec=None, effort: int = 0):
        """``codec``: a `Codec` to encode the crops with, as files are written (rate-aware
        rounding, ``effort``'s refinement passes), at qualities drawn uniformly in 1..100;
        None: the float model ``net`` with plain rounding, at uniform levels."""
        originals, decoded, levels = [], [], []
        for start in range(0, count, batch):
            x = sampler.batch(min(batch, count - start)).to(device)
            originals.append(torch.round(x * 255).to(torch.uint8).cpu())
            if codec is None:
                level = torch.rand(x.shape[0], device=device) * (LEVELS - 1)
                decoded.append(torch.round(hard_decode(net, x, level)[0] * 255).to(torch.uint8).cpu())
            else:
                level, images = codec_decode(codec, originals[-1], effort, sampler.rng)
                decoded.append(images)
            levels.append(level.cpu())
        self.x, self.decoded, self.level = torch.cat(originals), torch.cat(decoded), torch.cat(levels)
        self.patch, self.align = patch, align
        self.rng = np.random.default_rng(sampler.rng.integers(2**32))

    def batch(self, size: int, device):
        """(original, decoded, level) for ``size`` random sub-crops, pixels in [0, 1]."""
        idx = self.rng.integers(0, len(self.x), size)
        span = (self.x.shape[2] - self.patch) // self.align + 1
        corners = self.rng.integers(0, span, (size, 2)) * self.align

        def crops(source):
            return torch.stack([source[i, :, t:t + self.patch, l:l + self.patch]
                                for i, (t, l) in zip(idx.tolist(), corners.tolist())])
        return (crops(self.x).to(device).float() / 255, crops(self.decoded).to(device).float() / 255,
                self.level[torch.from_numpy(idx)].to(device))


@torch.no_grad()
def evaluate(net: VaezNetwork, images: list[torch.Tensor], levels=(0.0, 3.5, 7.0)) -> list[dict]:
    """bpp and PSNR with hard rounding, averaged over images, per level."""
    net.eval()
    results = []
    for level in levels:
        bpps, psnrs = [], []
        for x in images:
            lv = torch.full((1,), float(level), device=x.device)
            x_hat, bits = hard_decode(net, x, lv)
            if net.postfilter is not None:   # it sees the 8-bit image, as in the codec
                x_hat = torch.round(net.postfilter(x_hat, lv).clamp(0, 1) * 255) / 255
            mse = float(((x_hat - x) ** 2).mean())
            bpps.append(float(bits[0]) / (x.shape[2] * x.shape[3]))
            psnrs.append(10 * math.log10(1 / max(mse, 1e-12)))
        results.append({"level": level, "bpp": float(np.mean(bpps)), "psnr": float(np.mean(psnrs))})
    net.train()
    return results


def center_crop_tensor(im: np.ndarray, size: int, device) -> torch.Tensor:
    h, w = im.shape[:2]
    ch, cw = min(size, h // 32 * 32), min(size, w // 32 * 32)
    top, left = (h - ch) // 2, (w - cw) // 2
    patch = im[top:top + ch, left:left + cw]
    return torch.from_numpy(np.ascontiguousarray(patch)).permute(2, 0, 1)[None].float().div(255).to(device)


# Learning-rate multipliers. The linear transforms start as an orthonormal KLT and only need
# small corrections (at full rate Adam's noisy steps wreck them: measured, PSNR fell 3 dB in 500
# steps); the factorized prior of z is tiny and must track h_a closely.
LR_SCALES = (("analysis.lapped.", 0.05), ("synthesis.to_blocks.", 0.05),
             ("analysis.blocks.", 0.25), ("synthesis.blocks.", 0.25), ("prior.", 3.0),
             ("gains.", 5.0), ("context.", 3.0))


def parameter_groups(net: VaezNetwork) -> list[dict]:
    groups: dict[float, list] = {}
    for name, param in net.named_parameters():
        scale = next((s for prefix, s in LR_SCALES if name.startswith(prefix)), 1.0)
        groups.setdefault(scale, []).append(param)
    return [{"params": params, "lr_scale": scale} for scale, params in sorted(groups.items())]


def save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m neuralcodec.train", description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, type=Path, help="folder of training images (searched recursively)")
    ap.add_argument("--out", required=True, type=Path, help="run folder: last.pt and log.jsonl live here")
    ap.add_argument("--steps", type=int, default=100000, help="stop after this many steps in total")
    ap.add_argument("--minutes", type=float, default=0, help="stop after this many minutes of this run (0: no limit)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--lr-final", type=float, default=None, help="cosine decay to this lr by --steps")
    ap.add_argument("--warmup", type=int, default=200, help="linear learning-rate warm-up steps")
    ap.add_argument("--val-fraction", type=float, default=0.05)
    ap.add_argument("--val-every", type=int, default=500)
    ap.add_argument("--val-size", type=int, default=256, help="centre crop of each validation image")
    ap.add_argument("--save-every", type=int, default=200)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    ap.add_argument("--max-images", type=int, default=0, help="use at most this many training images (0: all)")
    ap.add_argument("--init", type=Path, default=None,
                    help="start from this checkpoint's weights (new optimizer; parts it lacks, "
                         "such as a context model, start fresh)")
    ap.add_argument("--context-hidden", type=int, default=64,
                    help="width of the checkerboard context model (0: hyperprior only)")
    ap.add_argument("--analysis-blocks", type=int, default=ModelConfig.analysis_blocks,
                    help="residual blocks of the analysis transform (with --only encoder and "
                         "--init, blocks the checkpoint lacks start as the identity)")
    ap.add_argument("--postfilter-channels", type=int, default=0,
                    help="width of the pixel post-filter (0: none)")
    ap.add_argument("--postfilter-scale", type=int, default=2, help="the post-filter's PixelUnshuffle factor")
    ap.add_argument("--only", choices=("all", "context", "postfilter", "encoder", "decoder"), default="all",
                    help="'context': train only the context model, on the rate alone, with "
                         "every other part frozen (cheap: no synthesis pass); 'postfilter': train "
                         "only the post-filter, on crops decoded once by the frozen codec; "
                         "'encoder': train only the encoder-side transforms (analysis and "
                         "hyper-analysis) for the frozen decoder: the new weights decode the "
                         "old files (see `export --decodes`); 'decoder': train everything the "
                         "decoder holds (synthesis, entropy model, decoder gains, post-filter) "
                         "with the encoder frozen, so that with --hard-rate the model fine-tunes "
                         "on exactly the rounded latents a file carries")
    ap.add_argument("--hard-rate", action="store_true",
                    help="count the rate of the rounded latents (straight-through), as a file "
                         "pays it, instead of the noisy-latent estimate; for fine-tuning")
    ap.add_argument("--cache", type=int, default=2400,
                    help="--only postfilter: crops of --crop pixels decoded up front")
    ap.add_argument("--crops-by", type=Path, default=None, metavar="WEIGHTS.npz",
                    help="--only postfilter: encode the crops with the real codec of these "
                         "weights (rate-aware rounding, --crops-effort refinement) instead of the "
                         "float model's plain rounding; the weights must be the model being trained")
    ap.add_argument("--crops-effort", type=int, default=0,
                    help="--crops-by: the encoder effort (0..3) the crops are encoded at")
    ap.add_argument("--patch", type=int, default=128,
                    help="--only postfilter: training sub-crop size (taken from the decoded crops)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--amp", action="store_true",
                    help="mixed precision (bfloat16) for the analysis and synthesis transforms; "
                         "meant for GPUs (works on CPUs that have fast bfloat16)")
    ap.add_argument("--channels-last", action="store_true",
                    help="channels_last memory layout (faster convolutions on GPUs; measured "
                         "3-6x slower on the 2-core development CPU)")
    args = ap.parse_args(argv)
    from .efforts import EFFORTS

    if (args.crops_by is not None or args.crops_effort) and args.only != "postfilter":
        print("--crops-by and --crops-effort choose the post-filter's training crops: they need "
              "--only postfilter", file=sys.stderr)
        return 2
    if args.crops_effort not in EFFORTS:
        print(f"--crops-effort must be one of {', '.join(map(str, EFFORTS))}", file=sys.stderr)
        return 2

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    log_path = args.out / "log.jsonl"

    def log(record: dict) -> None:
        record = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), **record}
        print(json.dumps(record), flush=True)
        with open(log_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    paths = list_images(args.data)
    if not paths:
        print(f"no images found under {args.data}", file=sys.stderr)
        return 2
    train_paths = [p for p in paths if not is_validation(p, args.val_fraction)]
    val_paths = [p for p in paths if is_validation(p, args.val_fraction)]
    if args.max_images:
        train_paths = train_paths[:args.max_images]
    t0 = time.time()
    train_images = [load_rgb(p) for p in train_paths]
    val_images = [center_crop_tensor(load_rgb(p), args.val_size, device) for p in val_paths]
    log({"event": "data", "train_images": len(train_images), "val_images": len(val_images),
         "train_megapixels": round(sum(im.shape[0] * im.shape[1] for im in train_images) / 1e6, 1),
         "load_seconds": round(time.time() - t0, 1), "device": str(device),
         "amp": args.amp, "channels_last": args.channels_last,
         "threads": torch.get_num_threads()})

    sampler = CropSampler(train_images, args.crop, args.seed)
    ckpt_path = args.out / "last.pt"
    net = VaezNetwork(ModelConfig(context_hidden=args.context_hidden,
                                  analysis_blocks=args.analysis_blocks,
                                  postfilter_channels=args.postfilter_channels,
                                  postfilter_scale=args.postfilter_scale)).to(device)
    trained = {"encoder": ("analysis.", "hyper_analysis."),
               "decoder": ("synthesis.", "hyper_synthesis.", "prior.", "context.", "postfilter.",
                           "gains.decoder_log_gain")}.get(args.only, (args.only + ".",))
    if args.only != "all":
        if args.init is None and not (args.out / "last.pt").exists():
            print(f"--only {args.only} trains one part of an existing model: give --init "
                  "(or resume a run)", file=sys.stderr)
            return 2
        if args.only in ("context", "postfilter") and getattr(net, args.only) is None:
            width = {"context": "--context-hidden", "postfilter": "--postfilter-channels"}[args.only]
            print(f"--only {args.only} needs {width} > 0", file=sys.stderr)
            return 2
        for name, p in net.named_parameters():
            p.requires_grad_(name.startswith(trained))
    if args.amp:
        net.autocast_dtype = torch.bfloat16
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    opt = torch.optim.Adam(parameter_groups(net), lr=args.lr)
    step, elapsed = 0, 0.0
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        net.load_state_dict(state["model"])
        try:
            opt.load_state_dict(state["optimizer"])
        except ValueError as exc:   # parameter groups changed: keep the weights, new optimizer
            log({"event": "fresh optimizer", "reason": str(exc)})
        step, elapsed = state["step"], state.get("elapsed", 0.0)
        log({"event": "resume", "step": step, "elapsed_minutes": round(elapsed / 60, 1)})
        sampler.rng = np.random.default_rng([args.seed, step])   # new crops after a resume
    elif args.init is not None:
        state = torch.load(args.init, map_location=device, weights_only=False)
        missing, unexpected = net.load_state_dict(state["model"], strict=False)
        # parts it lacks start fresh; with --only, only the part being trained may be missing
        # (a fresh, frozen context would make every decode wrong)
        fresh = {"all": ("context.", "postfilter."), "encoder": ("analysis.blocks.",),
                 "decoder": ("postfilter.",)}.get(args.only, trained)
        if unexpected or any(not k.startswith(fresh) for k in missing):
            print(f"{args.init} does not fit this model (missing {missing}, unexpected "
                  f"{unexpected})", file=sys.stderr)
            return 2
        log({"event": "init", "from": str(args.init), "fresh": missing})
    else:
        blocks = sampler.batch(256).unfold(2, 8, 8).unfold(3, 8, 8)
        blocks = blocks.permute(0, 2, 3, 1, 4, 5).reshape(-1, 3, 8, 8)
        std = init_from_klt(net.analysis, net.synthesis, blocks)
        init_entropy_model(net, std)
        net.to(device)
        log({"event": "klt_init", "blocks": len(blocks)})
    if args.channels_last:
        net.to(memory_format=memory_format)   # same Parameter objects: the optimizer keeps them

    def lr_at(s: int) -> float:
        if s < args.warmup:
            return args.lr * (s + 1) / args.warmup
        if args.lr_final is None:
            return args.lr
        frac = min(s / max(args.steps, 1), 1.0)
        return args.lr_final + 0.5 * (args.lr - args.lr_final) * (1 + math.cos(math.pi * frac))

    crops = None
    if args.only == "postfilter":
        if args.patch % args.postfilter_scale or args.patch > args.crop:
            print("--patch must be a multiple of --postfilter-scale, at most --crop", file=sys.stderr)
            return 2
        net.eval()
        t0 = time.time()
        with torch.no_grad():
            codec = None
            if args.crops_by is not None:
                from .codec import Codec

                codec = Codec(args.crops_by)
                problem = _weights_mismatch(codec.weights.float_params, net)
                if problem:
                    print(f"--crops-by {args.crops_by} is not the model being trained: {problem}",
                          file=sys.stderr)
                    return 2
            crops = DecodedCrops(net, sampler, args.cache, args.patch, args.postfilter_scale, device,
                                 codec=codec, effort=args.crops_effort)
        net.train()
        log({"event": "decoded crops", "crops": args.cache, "seconds": round(time.time() - t0, 1)})

    run_start = time.time()
    last_save = step
    window = []
    skipped = skipped_in_a_row = 0
    while step < args.steps:
        if args.minutes and time.time() - run_start > args.minutes * 60:
            break
        for group in opt.param_groups:
            group["lr"] = lr_at(step) * group.get("lr_scale", 1.0)
        tic = time.time()
        if crops is not None:
            x, decoded, level = crops.batch(args.batch, device)
            mse = ((net.postfilter(decoded, level) - x) ** 2).mean(dim=(1, 2, 3))
            out = {"loss": mse.mean(), "bpp": torch.zeros_like(mse), "mse": mse.detach()}
        else:
            x = sampler.batch(args.batch).to(device, non_blocking=True)
            if args.channels_last:
                x = x.contiguous(memory_format=memory_format)
            level = torch.rand(args.batch, device=device) * (LEVELS - 1)
            out = net(x, level, rate_only=args.only == "context", hard_rate=args.hard_rate)
        opt.zero_grad(set_to_none=True)
        if skipped_in_a_row > 100:
            log({"step": step, "event": "stopping: 100 non-finite steps in a row"})
            return 1
        if not torch.isfinite(out["loss"]):
            skipped += 1
            skipped_in_a_row += 1
            log({"step": step, "event": "skipped non-finite loss", "skipped": skipped})
            continue
        out["loss"].backward()
        norm = torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        if not torch.isfinite(norm):
            skipped += 1
            skipped_in_a_row += 1
            log({"step": step, "event": "skipped non-finite gradient", "skipped": skipped})
            continue
        opt.step()
        skipped_in_a_row = 0
        elapsed += time.time() - tic
        step += 1
        window.append((out["loss"].item(), out["bpp"].mean().item(),
                       (10 * torch.log10(1 / out["mse"].detach().clamp_min(1e-10))).mean().item()))
        if step % 50 == 0:
            arr = np.array(window)
            log({"step": step, "loss": round(arr[:, 0].mean(), 4), "bpp": round(arr[:, 1].mean(), 4),
                 "psnr": round(arr[:, 2].mean(), 3), "lr": lr_at(step),
                 "train_minutes": round(elapsed / 60, 2)})
            window = []
        if step % args.val_every == 0 and val_images:
            log({"step": step, "validation": evaluate(net, val_images)})
        if step - last_save >= args.save_every:
            save_checkpoint(ckpt_path, {"model": net.state_dict(), "optimizer": opt.state_dict(),
                                        "step": step, "elapsed": elapsed,
                                        "config": net.config.to_dict()})
            last_save = step
    save_checkpoint(ckpt_path, {"model": net.state_dict(), "optimizer": opt.state_dict(),
                                "step": step, "elapsed": elapsed, "config": net.config.to_dict()})
    if val_images:
        log({"step": step, "validation": evaluate(net, val_images), "event": "end"})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
