"""VAE encoding and decoding of frame sequences, a few frames at a time.

SD1.5's VAE decoder is the largest single user of memory in a run: on the CPU in fp32, every frame
more per call raised the peak by ~0.46 GB at 256×256 (bench/README.md), and its full-resolution
blocks grow with the pixel count. So a clip goes through it `chunk` frames at a time, and its memory
stays fixed however many frames the clip has.

`chunk=AUTO` (the default) takes on a GPU as many frames per call as fit in memory the run has
already peaked at and since freed (the denoising's activations, and in low-VRAM mode the DenoisingNet's
weights), so batching frames never raises the run's peak VRAM; and one frame per call on the CPU, where
a single frame's convolutions already keep every core busy and each frame more only raises the peak.
A frame's need is estimated from the decoder's widest full-resolution activation (`frame_bytes`); if
the device still runs out, the call is retried with half the frames, down to one, so "one at a time"
happens only when it must. Latents are always *scaled* (× 0.18215).
"""

from __future__ import annotations

from typing import Callable

import torch
from einops import rearrange

from ..errors import AA2InputError

AUTO = 0  # frames per VAE call: as many as free device memory allows (1 on the CPU)
DEFAULT_CHUNK = AUTO
LIVE_FULL_RESOLUTION_TENSORS = 8  # measured on the CPU: 0.46 GB per 256x256 fp32 frame ≈ 7 x (256 channels x H x W)
FREE_MEMORY_SHARE = 0.8  # of the free memory the estimate may plan for: allocator slack, other tensors
FreeBytes = Callable[[torch.device], "int | None"]


def frame_bytes(vae, height: int, width: int, dtype: torch.dtype) -> int:
    """Estimated working memory of one frame through the VAE at `height × width` pixels: the
    decoder's last up block runs at full resolution on its widest channel count (SD1.5: 256), and
    about `LIVE_FULL_RESOLUTION_TENSORS` such tensors are alive at its peak."""
    channels = max(vae.config.block_out_channels[:2])
    element = torch.finfo(dtype).bits // 8
    return LIVE_FULL_RESOLUTION_TENSORS * channels * height * width * element


def free_device_bytes(device: torch.device) -> int | None:
    """Bytes the VAE may use on `device` without raising the process's peak: what was allocated at the
    peak and is free again, within what the device has free (plus torch's cache). None off CUDA."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    allocated = torch.cuda.memory_allocated(device)
    under_peak = torch.cuda.max_memory_allocated(device) - allocated
    return max(0, min(under_peak, free + torch.cuda.memory_reserved(device) - allocated))


def frames_per_call(chunk: int, frames: int, per_frame: int, device: torch.device,
                    free_bytes: FreeBytes = free_device_bytes) -> int:
    """The frames per VAE call: `chunk` itself, or for `AUTO` what fits in free memory (1 off the GPU)."""
    if chunk < 0:
        raise AA2InputError(f"vae_chunk must be >= 1 frames per call, or 0 for automatic; got {chunk}")
    if chunk != AUTO:
        return chunk
    free = free_bytes(device)
    if free is None:
        return 1
    return max(1, min(frames, int(FREE_MEMORY_SHARE * free) // max(per_frame, 1)))


def _in_chunks(run: Callable[[int, int], torch.Tensor], frames: int, chunk: int, auto: bool) -> list[torch.Tensor]:
    """`run(start, stop)` over `frames` in calls of `chunk`; an automatic chunk that runs the device
    out of memory is halved and the call retried (a fixed one the user chose raises as it is)."""
    out, start = [], 0
    while start < frames:
        stop = min(start + chunk, frames)
        try:
            out.append(run(start, stop))
        except torch.OutOfMemoryError:
            if not auto or chunk == 1:
                raise
            chunk = max(1, (stop - start) // 2)
            torch.cuda.empty_cache()
            continue
        start = stop
    return out


def encode_frames(vae, frames: torch.Tensor, chunk: int = DEFAULT_CHUNK,
                  free_bytes: FreeBytes = free_device_bytes) -> torch.Tensor:
    """`frames [F, 3, H, W]` in 0..1 -> scaled latents `[1, 4, F, H/8, W/8]` (the posterior mean).

    The mean, not a sample: conditions must not carry noise of their own (Moore-AnimateAnyone does
    the same for its reference latent).
    """
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise AA2InputError(f"frames must be [F, 3, H, W], got {tuple(frames.shape)}")
    if frames.shape[-2] % 8 or frames.shape[-1] % 8:
        raise AA2InputError(f"frame size {tuple(frames.shape[-2:])} must be a multiple of 8 (the VAE's factor)")
    param = next(vae.parameters())
    count = frames.shape[0]
    per_call = frames_per_call(chunk, count, frame_bytes(vae, *frames.shape[-2:], param.dtype), param.device, free_bytes)

    def run(start: int, stop: int) -> torch.Tensor:
        pixels = frames[start:stop].to(param.device, param.dtype) * 2 - 1
        return vae.encode(pixels).latent_dist.mean * vae.config.scaling_factor

    return rearrange(torch.cat(_in_chunks(run, count, per_call, chunk == AUTO)), "f c h w -> 1 c f h w")


def decode_latents(vae, latents: torch.Tensor, chunk: int = DEFAULT_CHUNK, out_device: torch.device | str = "cpu",
                   free_bytes: FreeBytes = free_device_bytes) -> torch.Tensor:
    """Scaled latents `[1, 4, F, h, w]` -> frames `[F, 3, 8h, 8w]` in 0..1, gathered on `out_device`."""
    param = next(vae.parameters())
    flat = rearrange(latents, "b c f h w -> (b f) c h w")
    count, (h, w) = flat.shape[0], flat.shape[-2:]
    per_call = frames_per_call(chunk, count, frame_bytes(vae, 8 * h, 8 * w, param.dtype), param.device, free_bytes)

    def run(start: int, stop: int) -> torch.Tensor:
        z = flat[start:stop].to(param.device, param.dtype) / vae.config.scaling_factor
        pixels = vae.decode(z).sample
        return ((pixels.float() + 1) / 2).clamp(0, 1).to(out_device)

    return torch.cat(_in_chunks(run, count, per_call, chunk == AUTO))


@torch.no_grad()
def vae_round_trip(vae, frames: torch.Tensor) -> torch.Tensor:
    """`frames [F, 3, H, W]` 0..1 through `vae` (posterior mean, then decode), on the CPU: what the
    latent space can hold of them — the ceiling of any render, and the empty scene a render's
    silhouette is measured against (`aa2.metrics.Truth.scene`)."""
    return decode_latents(vae, encode_frames(vae, frames)).float().cpu()

