"""ComfyUI's tensor layouts <-> aa2's, in one place (every conversion has a round-trip test).

ComfyUI: IMAGE `[B, H, W, C]` float 0..1 (B = frames), MASK `[B, H, W]` float 0..1 (a single
mask may come as `[H, W]`). aa2: frames `[F, 3, H, W]` float 0..1, masks `[F, H, W]`.
"""

from __future__ import annotations

import torch
from einops import rearrange

from ..aa2.errors import AA2InputError


def image_to_frames(image: torch.Tensor, name: str = "image") -> torch.Tensor:
    """IMAGE `[B, H, W, C]` -> frames `[B, 3, H, W]` float32; an alpha channel is dropped."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] not in (3, 4):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise AA2InputError(
            f"{name} must be a ComfyUI IMAGE [frames, height, width, 3]; got {shape}. "
            "Connect an image or video loader's IMAGE output."
        )
    return rearrange(image[..., :3].float(), "f h w c -> f c h w")


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
    return mask.float()


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
