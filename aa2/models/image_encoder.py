"""Image encoder: the CLIP image embedding of the reference drives cross-attention (paper 3.1).

As in sd-image-variations and Moore-AnimateAnyone, the projected CLIP ViT-L/14 image embedding is
the single context token; the unconditional context for classifier-free guidance is zeros.
Preprocessing follows Moore-AnimateAnyone, whose weights we load: the whole image is squashed to
224×224 (bicubic) before CLIP's normalisation, so nothing of the character is cropped away — the
CLIPImageProcessor's own centre crop would cut the head or feet off a full-body portrait image.
Done in torch so it runs on the model's device without a PIL round trip.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import AA2InputError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_preprocess(images: torch.Tensor, size: int) -> torch.Tensor:
    """`images [B, 3, H, W]` in 0..1 -> CLIP's normalised `[B, 3, size, size]`."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise AA2InputError(f"reference images must be [B, 3, H, W] RGB, got {tuple(images.shape)}")
    x = F.interpolate(images.float(), size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    x = x.clamp(0, 1)
    mean = x.new_tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def reference_context(image_encoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """CLIP image embeddings as cross-attention context: `[B, 1, projection_dim]`."""
    size = image_encoder.config.image_size
    param = next(image_encoder.parameters())
    pixels = clip_preprocess(images, size).to(param.device, param.dtype)
    return image_encoder(pixel_values=pixels).image_embeds.unsqueeze(1)
