"""VAE encoding and decoding of frame sequences, a few frames at a time.

SD1.5's VAE decoder is the largest single user of memory in a run: on the CPU in fp32, every frame
more per call raised the peak by ~0.46 GB at 256×256 (bench/README.md), and its full-resolution
blocks grow with the pixel count. So a clip goes through it `chunk` frames at a time, and its memory
stays fixed however many frames the clip has. One frame per call is the default: the lowest peak,
for almost no time, since a single frame's convolutions already keep the device busy.
Latents are always *scaled* (× 0.18215).
"""

from __future__ import annotations

import torch
from einops import rearrange

from ..errors import AA2InputError

DEFAULT_CHUNK = 1  # frames per VAE call


def encode_frames(vae, frames: torch.Tensor, chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
    """`frames [F, 3, H, W]` in 0..1 -> scaled latents `[1, 4, F, H/8, W/8]` (the posterior mean).

    The mean, not a sample: conditions must not carry noise of their own (Moore-AnimateAnyone does
    the same for its reference latent).
    """
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise AA2InputError(f"frames must be [F, 3, H, W], got {tuple(frames.shape)}")
    if frames.shape[-2] % 8 or frames.shape[-1] % 8:
        raise AA2InputError(f"frame size {tuple(frames.shape[-2:])} must be a multiple of 8 (the VAE's factor)")
    param = next(vae.parameters())
    latents = []
    for start in range(0, frames.shape[0], chunk):
        pixels = frames[start : start + chunk].to(param.device, param.dtype) * 2 - 1
        latents.append(vae.encode(pixels).latent_dist.mean * vae.config.scaling_factor)
    return rearrange(torch.cat(latents), "f c h w -> 1 c f h w")


def decode_latents(vae, latents: torch.Tensor, chunk: int = DEFAULT_CHUNK, out_device: torch.device | str = "cpu") -> torch.Tensor:
    """Scaled latents `[1, 4, F, h, w]` -> frames `[F, 3, 8h, 8w]` in 0..1, gathered on `out_device`."""
    param = next(vae.parameters())
    flat = rearrange(latents, "b c f h w -> (b f) c h w")
    frames = []
    for start in range(0, flat.shape[0], chunk):
        z = flat[start : start + chunk].to(param.device, param.dtype) / vae.config.scaling_factor
        pixels = vae.decode(z).sample
        frames.append(((pixels.float() + 1) / 2).clamp(0, 1).to(out_device))
    return torch.cat(frames)


@torch.no_grad()
def vae_round_trip(vae, frames: torch.Tensor) -> torch.Tensor:
    """`frames [F, 3, H, W]` 0..1 through `vae` (posterior mean, then decode), on the CPU: what the
    latent space can hold of them — the ceiling of any render, and the empty scene a render's
    silhouette is measured against (`aa2.metrics.Truth.scene`)."""
    return decode_latents(vae, encode_frames(vae, frames)).float().cpu()

