"""ComfyUI's tensor layouts <-> aa2's, in one place (every conversion has a round-trip test).

ComfyUI: IMAGE `[B, H, W, C]` float 0..1 (B = frames), MASK `[B, H, W]` float 0..1 (a single
mask may come as `[H, W]`), LATENT `{"samples": [B, 4, h, w]}` of *unscaled* VAE latents (B = frames),
NOISE an object with `.seed` and `.generate_noise(latent)`. aa2: frames `[F, 3, H, W]` float 0..1, masks
`[F, H, W]`, latents `[1, 4, F, h, w]` *scaled* by the VAE's scaling factor (0.18215 for SD1.5).
"""

from __future__ import annotations

import torch
from einops import rearrange

from ..aa2.checks import first_non_finite, unit_range
from ..aa2.errors import AA2InputError, size_text


def image_to_frames(image: torch.Tensor, name: str = "image") -> torch.Tensor:
    """IMAGE `[B, H, W, C]` -> frames `[B, 3, H, W]` float32 0..1; an alpha channel is dropped.

    uint8 (from a script or custom node) is scaled by 1/255; float outside 0..1 is refused
    (`aa2.checks.unit_range`) instead of being drawn as if it were 0..1.
    """
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] not in (3, 4):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise AA2InputError(
            f"{name} must be a ComfyUI IMAGE [frames, height, width, 3]; got {shape}. "
            "Connect an image or video loader's IMAGE output."
        )
    _usable(image, name, "IMAGE")
    return rearrange(unit_range(image[..., :3], name), "f h w c -> f c h w")


def frames_to_image(frames: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
    """frames `[F, 3, H, W]` -> IMAGE `[F, H, W, 3]` float32 clamped to 0..1, on `device`."""
    image = rearrange(frames.float().clamp(0, 1), "f c h w -> f h w c").contiguous()
    return image if device is None else image.to(device)


def mask_to_frames(mask: torch.Tensor, name: str = "mask") -> torch.Tensor:
    """MASK `[B, H, W]` (or one `[H, W]`) -> `[B, H, W]` float32."""
    if isinstance(mask, torch.Tensor) and mask.ndim == 2:
        mask = mask[None]
    if not isinstance(mask, torch.Tensor) or mask.ndim != 3:
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise AA2InputError(
            f"{name} must be a ComfyUI MASK [frames, height, width]; got {shape}. "
            "Connect a MASK output (from a SAM node, a mask loader, or ObjectSegment)."
        )
    _usable(mask, name, "MASK")
    return mask.float()


def _usable(frames: torch.Tensor, name: str, kind: str) -> None:
    """Refuse an empty batch or frame, and NaN / inf, before any model sees them: torch would fail
    later with a message about its own internals, or carry the NaN into every output frame."""
    count, height, width = frames.shape[0], frames.shape[1], frames.shape[2]
    if count == 0:
        raise AA2InputError(f"{name} is an empty {kind} (no frames): check the node that made it, e.g. a video "
                            "loader whose skip / cap settings left nothing")
    if height == 0 or width == 0:
        raise AA2InputError(f"{name} frames are {size_text(height, width)}: an empty {kind}; "
                            "check the crop or resize that made it")
    bad = first_non_finite(frames)
    if bad is not None:
        raise AA2InputError(f"{name} frame {bad} holds NaN or infinite values: check the node that made it "
                            "(a division by zero in a math or normalise node is the usual cause)")


def choice(value: str, choices, name: str) -> str:
    """`value` if it is one of `choices`. The host checks a dropdown's own widget, but not a value
    reaching it through a link (or an API-format workflow edited by hand), which would otherwise
    end as a KeyError or be silently taken as another choice."""
    if value not in choices:
        raise AA2InputError(f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}")
    return value


def frames_to_mask(mask: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
    """`[F, H, W]` (bool or float) -> MASK `[F, H, W]` float32, on `device`."""
    mask = mask.float().contiguous()
    return mask if device is None else mask.to(device)


def match_frames(mask: torch.Tensor, frames: int, name: str = "mask") -> torch.Tensor:
    """A mask with one frame is repeated to `frames`; other counts must already match."""
    if mask.shape[0] == frames:
        return mask
    if mask.shape[0] == 1:
        return mask.expand(frames, -1, -1)
    raise AA2InputError(
        f"{name} has {mask.shape[0]} frames but the video has {frames}: give one mask per frame "
        "(or a single mask for every frame)."
    )


def latents_to_latent(latents: torch.Tensor, scaling_factor: float, device: torch.device | None = None) -> dict:
    """aa2's scaled latents `[1, 4, F, h, w]` -> LATENT `{"samples": [F, 4, h, w]}`, unscaled, float32.

    ComfyUI's LATENT holds the VAE's own latents: core VAE Decode passes them straight to the VAE, and
    the model's latent format (SD15: x 0.18215) scales them on the way into a sampler. aa2 works in the
    scaled space, so the boundary divides by the checkpoint's VAE scaling factor here.
    """
    samples = rearrange(latents.float(), "1 c f h w -> f c h w") / scaling_factor
    samples = samples.contiguous()
    return {"samples": samples if device is None else samples.to(device)}


def latent_to_latents(latent, scaling_factor: float, name: str = "latent") -> torch.Tensor:
    """LATENT `{"samples": [F, 4, h, w]}` (unscaled) -> aa2's scaled `[1, 4, F, h, w]` float32."""
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if not isinstance(samples, torch.Tensor) or samples.ndim != 4 or samples.shape[1] != 4:
        got = (tuple(samples.shape) if isinstance(samples, torch.Tensor)
               else "a dict without 'samples'" if isinstance(latent, dict) else type(latent).__name__)
        raise AA2InputError(
            f"{name} must be an SD1.5 ComfyUI LATENT, samples [frames, 4, height/8, width/8]; got {got}. "
            "Connect a LATENT from VAE Encode or an AA2 sampler (a video model's 5-D latent does not fit)."
        )
    return rearrange(samples.float() * scaling_factor, "f c h w -> 1 c f h w")


def noise_to_latents(noise, frames: int, height: int, width: int, name: str = "noise") -> torch.Tensor:
    """A ComfyUI NOISE (RandomNoise, ...) -> initial noise `[1, 4, F, h, w]` for `frames` frames.

    NOISE is SamplerCustomAdvanced's type: an object whose `generate_noise(latent)` returns
    unit-variance noise shaped like `latent["samples"]`. It is asked for one SD1.5 latent per frame,
    frames as the batch, exactly as it would be for those frames in a core sampler. Noise needs no
    scaling: it is the same in the VAE's space and the sampler's.
    """
    if not callable(getattr(noise, "generate_noise", None)):
        raise AA2InputError(f"{name} must be a ComfyUI NOISE (from RandomNoise); got {type(noise).__name__}")
    shape = (frames, 4, height // 8, width // 8)
    made = noise.generate_noise({"samples": torch.zeros(shape)})
    if not isinstance(made, torch.Tensor) or tuple(made.shape) != shape:
        got = tuple(made.shape) if isinstance(made, torch.Tensor) else type(made).__name__
        raise AA2InputError(f"{name} gave noise of shape {got}, not one SD1.5 latent per frame {shape}")
    if not torch.isfinite(made).all():
        raise AA2InputError(f"{name} holds NaN or infinite values: connect RandomNoise")
    if not made.any():
        raise AA2InputError(
            f"{name} is all zeros (Disable Noise): an AA2 sampler starts from noise alone, with no latent "
            "to keep, so it would render nothing. Connect RandomNoise, or disconnect it to use the seed."
        )
    return rearrange(made.float(), "f c h w -> 1 c f h w")
