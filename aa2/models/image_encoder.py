"""Image encoder: the CLIP image embedding of the reference drives cross-attention (paper 3.1).

As in sd-image-variations and Moore-AnimateAnyone, the projected CLIP ViT-L/14 image embedding is
the single context token; the unconditional context for classifier-free guidance is zeros.

Preprocessing, two named ways (`ClipCrop`), both on the uint8 image with PIL's bicubic filter as
transformers' `CLIPImageProcessor` does, then CLIP's mean/std:
* `"squash"` (default): the whole image resized to 224×224. Moore-AnimateAnyone's inference
  (app.py and scripts/pose2vid.py, through pipeline_pose2vid_long.py) does exactly this,
  `ref_image.resize((224, 224))` before `CLIPImageProcessor`, so it is what its published results
  were sampled with; and nothing of a full-body character is cut away.
* `"center"`: `CLIPImageProcessor`'s own semantics, shortest edge to 224 then a centre crop: what
  Moore's training datasets (src/dataset/dance_*.py) and its training-time validation
  (pipeline_pose2vid.py) fed CLIP. A portrait loses its top and bottom.

Written with PIL and torch rather than by calling `CLIPImageProcessor`: since transformers 5 that
class resizes with torchvision whenever torchvision is installed (ComfyUI always has it),
which is not the uint8 PIL resize Moore ran (transformers 4.30). tests/test_image_encoder.py checks
both modes against transformers' PIL processor.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..errors import AA2InputError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

ClipCrop = Literal["squash", "center"]
CLIP_CROPS: tuple[str, ...] = get_args(ClipCrop)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """`[3, H, W]` in 0..1 -> `[H, W, 3]` uint8; exact for images that were uint8 (ComfyUI's LoadImage)."""
    return image.detach().float().cpu().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def _resize_uint8(pixels: np.ndarray, size: int, crop: str) -> np.ndarray:
    """`[H, W, 3]` uint8 -> `[size, size, 3]` uint8, PIL bicubic as CLIPImageProcessor resizes."""
    image = Image.fromarray(pixels)
    if crop == "squash":
        return np.asarray(image.resize((size, size), Image.Resampling.BICUBIC))
    width, height = image.size
    short, long = min(width, height), max(width, height)
    # CLIPImageProcessor's shortest edge: the long side truncated, not rounded (get_resize_output_image_size).
    new_long = int(size * long / short)
    new_width, new_height = (size, new_long) if width <= height else (new_long, size)
    resized = np.asarray(image.resize((new_width, new_height), Image.Resampling.BICUBIC))
    top, left = (new_height - size) // 2, (new_width - size) // 2
    return resized[top : top + size, left : left + size]


def clip_preprocess(images: torch.Tensor, size: int, crop: ClipCrop = "squash") -> torch.Tensor:
    """`images [B, 3, H, W]` in 0..1 -> CLIP's normalised `[B, 3, size, size]` float32, on the CPU."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise AA2InputError(f"reference images must be [B, 3, H, W] RGB, got {tuple(images.shape)}")
    if crop not in CLIP_CROPS:
        raise AA2InputError(f"unknown CLIP crop {crop!r}; choose one of {', '.join(CLIP_CROPS)}")
    pixels = np.stack([_resize_uint8(to_uint8(image), size, crop) for image in images])
    # transformers rescales in float64 then casts, and normalises in float32: the same here.
    x = torch.from_numpy(pixels).double().mul(1 / 255).float().permute(0, 3, 1, 2)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def reference_context(image_encoder: nn.Module, images: torch.Tensor, crop: ClipCrop = "squash") -> torch.Tensor:
    """CLIP image embeddings as cross-attention context: `[B, 1, projection_dim]`."""
    size = image_encoder.config.image_size
    param = next(image_encoder.parameters())
    pixels = clip_preprocess(images, size, crop).to(param.device, param.dtype)
    return image_encoder(pixel_values=pixels).image_embeds.unsqueeze(1)
