"""Train a small VAE (diffusers `AutoencoderKL`) on prepared frames, for models trained from scratch.

    python -m train.vae --data DATA --out VAE_DIR [--eval-data TEST_DIR] [--steps 4000] [--size 64] [--crop 64]

Animate Anyone 2 works in the latent space of SD1.5's VAE. A model trained from scratch on a world
of its own (SynthWorld, issue "SynthWorld") needs a VAE that reconstructs that world's frames, with
the same structure — 8x downsampling, 4 latent channels, a KL-regularised posterior — so that
every other part of the pack (encode_frames, latent masks, the pipeline) applies unchanged.

The objective is Stable Diffusion's autoencoder objective without its adversarial and perceptual
terms (which need a discriminator and a VGG that a small CPU run cannot afford): L1 + MSE on pixels
plus a small KL weight that keeps the posterior close to a unit Gaussian. After training, the latent
scale (`scaling_factor`) is measured as 1 / std of the posterior means over the training frames, as
SD1.5's 0.18215 was, so the diffusion model sees latents of unit variance.

`--crop C` trains on random C x C crops of the frames, as Stable Diffusion's autoencoder was trained
on crops smaller than the images it later encodes: the network is convolutional (one attention
layer at the lowest level aside), so it applies to whole frames, and a step costs (C / size)^2 of a
whole-frame step. The PSNR in `vae_metrics.json` is always measured on whole frames.

Writes a diffusers folder `VAE_DIR` (`config.json` with the measured scaling factor,
`diffusion_pytorch_model.safetensors`) that `ModelSources(vae=...)` and `train.init_model` read, and
`VAE_DIR/vae_metrics.json` with the reconstruction PSNR on `--eval-data` (or the training frames).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as nnf

from aa2.config import VAEShape
from aa2.errors import AA2Error, AA2InputError

from . import store


def read_all_frames(data: str | Path, size: int, limit: int | None = None) -> torch.Tensor:
    """Every frame of every prepared video under `data`, resized to `size` (square): `[N, 3, S, S]` uint8."""
    import cv2

    root = Path(data)
    folders = sorted(p for p in root.iterdir() if (p / store.META).is_file()) if root.is_dir() else []
    if not folders:
        raise AA2InputError(f"{root} holds no prepared videos (folders with {store.META}); write some with "
                            "python -m train.prepare or python -m train.synthworld")
    frames = []
    for folder in folders[:limit]:
        meta = store.read_json(folder / store.META)
        pixels = store.read_frames(folder, meta["frames_file"], range(int(meta["frames"])))
        if pixels.shape[1:3] != (size, size):
            pixels = np.stack([cv2.resize(p, (size, size), interpolation=cv2.INTER_AREA) for p in pixels])
        frames.append(torch.from_numpy(pixels))
    return torch.cat(frames).permute(0, 3, 1, 2).contiguous()


def build_vae(shape: VAEShape):
    from diffusers import AutoencoderKL

    return AutoencoderKL(**shape.diffusers_config())


def vae_loss(vae, pixels: torch.Tensor, kl_weight: float) -> tuple[torch.Tensor, dict[str, float]]:
    """L1 + MSE reconstruction of a posterior sample, plus `kl_weight` x KL (mean per latent element)."""
    posterior = vae.encode(pixels).latent_dist
    reconstruction = vae.decode(posterior.sample()).sample
    l1 = (reconstruction - pixels).abs().mean()
    mse = nnf.mse_loss(reconstruction, pixels)
    kl = posterior.kl().mean() / posterior.mean[0].numel()
    return l1 + mse + kl_weight * kl, {"l1": l1.item(), "mse": mse.item(), "kl": kl.item()}


@torch.no_grad()
def measure_scaling_factor(vae, frames: torch.Tensor, batch: int = 64) -> float:
    """1 / std of the posterior means over `frames` (uint8): the scale that gives unit-variance latents."""
    device = next(vae.parameters()).device
    means = [vae.encode(_to_model(frames[i:i + batch]).to(device)).latent_dist.mean for i in range(0, len(frames), batch)]
    return float(1.0 / torch.cat(means).std())


@torch.no_grad()
def reconstruction_psnr(vae, frames: torch.Tensor, batch: int = 64) -> float:
    """Mean per-frame PSNR (8-bit, dB) of decode(mean(encode(x))) against x."""
    scores, device = [], next(vae.parameters()).device
    for i in range(0, len(frames), batch):
        truth = frames[i:i + batch].to(device).float() / 255
        decoded = vae.decode(vae.encode(truth * 2 - 1).latent_dist.mean).sample
        decoded = ((decoded.clamp(-1, 1) + 1) * 127.5).round() / 255
        mse = ((decoded - truth) ** 2).flatten(1).mean(1).clamp_min(1e-10)
        scores += (10 * torch.log10(1 / mse)).tolist()
    return sum(scores) / len(scores)


def random_crops(pixels: torch.Tensor, crop: int, generator: torch.Generator) -> torch.Tensor:
    """One random `crop` x `crop` window from each image of `pixels [N, C, H, W]` (the whole image when it fits)."""
    height, width = pixels.shape[-2:]
    if crop >= height and crop >= width:
        return pixels
    tops = torch.randint(height - crop + 1, (len(pixels),), generator=generator).tolist()
    lefts = torch.randint(width - crop + 1, (len(pixels),), generator=generator).tolist()
    return torch.stack([p[:, t:t + crop, l:l + crop] for p, t, l in zip(pixels, tops, lefts)])


def train_vae(data: str | Path, out: str | Path, *, shape: VAEShape, size: int = 64, steps: int = 4000,
              batch_size: int = 32, learning_rate: float = 1e-3, kl_weight: float = 1e-4, seed: int = 0,
              eval_data: str | Path | None = None, log_every: int = 100, crop: int | None = None,
              device: str | None = None) -> dict[str, float]:
    """Train, measure the scaling factor, write the diffusers folder and metrics; returns the metrics.
    `device`: where the VAE trains (default: CUDA when there is one); the frames stay in host memory
    as uint8 and only each batch moves."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise AA2InputError(f"{out} is not empty: choose a new --out (a trained VAE is never overwritten)")
    if size % 8:
        raise AA2InputError(f"--size must be a multiple of 8 (the VAE's factor); got {size}")
    crop = size if crop is None else crop
    if crop % 8 or not 8 <= crop <= size:
        raise AA2InputError(f"--crop must be a multiple of 8 from 8 to --size ({size}); got {crop}")
    frames = read_all_frames(data, size)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    vae = build_vae(shape).to(device).train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s / steps, 1))))
    started = time.perf_counter()
    crops = f" ({crop}x{crop} crops)" if crop < size else ""
    print(f"train.vae: {len(frames)} frames of {size}x{size}, {sum(p.numel() for p in vae.parameters()) / 1e6:.2f}M "
          f"parameters, {steps} steps of {batch_size}{crops} on {device}", flush=True)
    for step in range(1, steps + 1):
        picks = torch.randint(len(frames), (batch_size,), generator=generator)
        pixels = _to_model(random_crops(frames[picks], crop, generator)).to(device)
        flip = torch.rand(batch_size, generator=generator) < 0.5  # mirror images: the same world, twice the views
        pixels = torch.where(flip[:, None, None, None].to(device), pixels.flip(-1), pixels)
        loss, parts = vae_loss(vae, pixels, kl_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % log_every == 0 or step == 1 or step == steps:
            psnr = -10 * math.log10(max(parts["mse"] / 4, 1e-10))  # mse of -1..1 pixels -> 0..1 PSNR
            print(f"step {step}/{steps}  loss {loss.item():.4f}  train PSNR {psnr:.2f} dB  kl {parts['kl']:.3f}  "
                  f"{time.perf_counter() - started:.0f} s", flush=True)

    vae.eval()
    scale = measure_scaling_factor(vae, frames)
    held = read_all_frames(eval_data, size) if eval_data else frames
    metrics = {"reconstruction_psnr": reconstruction_psnr(vae, held), "evaluated_on": str(eval_data or data),
               "evaluated_frames": len(held), "scaling_factor": scale, "steps": steps, "batch_size": batch_size,
               "size": size, "crop": crop, "seconds": time.perf_counter() - started, "seed": seed}
    vae.register_to_config(scaling_factor=scale)
    vae.to("cpu")
    tmp = out.with_name(f".{out.name}.tmp")  # written whole, then renamed: never half a VAE
    shutil.rmtree(tmp, ignore_errors=True)
    vae.save_pretrained(tmp)
    (tmp / "vae_metrics.json").write_text(json.dumps(metrics, indent=1))
    if out.exists():
        out.rmdir()  # empty (checked above)
    tmp.rename(out)
    return metrics


def _to_model(frames: torch.Tensor) -> torch.Tensor:
    return frames.float() / 127.5 - 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.vae", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="prepared videos (train.prepare or train.synthworld)")
    parser.add_argument("--out", required=True, help="new folder for the VAE (diffusers layout)")
    parser.add_argument("--eval-data", help="prepared videos to measure reconstruction PSNR on (default: --data)")
    parser.add_argument("--size", type=int, default=64, help="square frame size (default 64)")
    parser.add_argument("--crop", type=int, help="train on random square crops of this size, a multiple of 8 "
                        "(default: whole frames); scores are always on whole frames")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--kl-weight", type=float, default=1e-4)
    parser.add_argument("--channels", type=int, nargs=4, default=(16, 32, 64, 64), metavar="C",
                        help="block widths of the four levels (8x downsampling; default 16 32 64 64: the full-resolution level dominates the cost)")
    parser.add_argument("--layers", type=int, default=1, help="resnet layers per level (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", help="where to train (default: cuda when available, else cpu)")
    args = parser.parse_args(argv)
    for name in ("steps", "batch_size", "size", "layers"):
        if getattr(args, name) < 1:
            print(f"error: --{name.replace('_', '-')} must be at least 1", file=sys.stderr)
            return 2
    if not (args.lr > 0 and args.kl_weight >= 0):
        print("error: --lr must be > 0 and --kl-weight >= 0", file=sys.stderr)
        return 2
    shape = VAEShape(block_out_channels=tuple(args.channels), layers_per_block=args.layers,
                     norm_num_groups=min(32, min(args.channels)))
    try:
        metrics = train_vae(args.data, args.out, shape=shape, size=args.size, steps=args.steps,
                            batch_size=args.batch_size, learning_rate=args.lr, kl_weight=args.kl_weight,
                            seed=args.seed, eval_data=args.eval_data, crop=args.crop, device=args.device)
    except AA2Error as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
