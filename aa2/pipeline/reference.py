"""The character, encoded once: ReferenceNet features and the CLIP context (paper section 3.1).

An `EncodedReference` depends only on the reference image, the output size and the model, so one
serves every seed, every clip of a long video and every re-render: the ReferenceNet and CLIP run
once per character, never per step or per clip.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..errors import AA2InputError, size_text
from ..models.aa2_model import AA2Model
from ..models.image_encoder import ClipCrop, reference_context, to_uint8
from ..models.reference_attention import ReferenceBank
from .offload import PartPlacement
from .vae_codec import encode_frames


@dataclass
class EncodedReference:
    """ReferenceNet features for the conditional branch, and both guidance contexts.

    `bank`: layer path -> `[1, tokens, C]`; `context`: `[1, 1, C]` CLIP embedding;
    `unconditional_context`: zeros of that shape (the unconditional branch sees no character).
    """

    bank: ReferenceBank
    context: torch.Tensor
    unconditional_context: torch.Tensor
    latents: torch.Tensor  # [1, 4, h, w]
    size: tuple[int, int]  # (H, W) in pixels the features were made for
    fusion: str

    def check(self, model: AA2Model, size: tuple[int, int]) -> None:
        if tuple(size) != tuple(self.size):
            raise AA2InputError(
                f"the reference was encoded for {size_text(*self.size)} but the video is {size_text(*size)}: "
                "encode it again at the video's size"
            )
        if model.config.fusion != self.fusion:
            raise AA2InputError(
                f"the reference was encoded by a model with {self.fusion!r} reference attention; this one has "
                f"{model.config.fusion!r}: encode it again with this model"
            )

    def to(self, device: torch.device | str) -> "EncodedReference":
        return EncodedReference(
            {k: v.to(device) for k, v in self.bank.items()}, self.context.to(device),
            self.unconditional_context.to(device), self.latents.to(device), self.size, self.fusion,
        )


def reference_pixels(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """`image [3, H, W]` 0..1 at the output `size = (H, W)`, as the ReferenceNet sees it. A resize goes
    through PIL's Lanczos filter on the uint8 image, as Moore-AnimateAnyone's `VaeImageProcessor`
    resizes its PIL reference (a torch bilinear resize differed by up to ~50/255 at a photo's edges);
    an image already at `size` is used as it is, unquantised."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image.float()
    height, width = size
    resized = Image.fromarray(to_uint8(image)).resize((width, height), Image.Resampling.LANCZOS)
    return torch.from_numpy(np.array(resized)).permute(2, 0, 1).float() / 255


@torch.no_grad()
def encode_reference(model: AA2Model, image: torch.Tensor, size: tuple[int, int],
                     clip_crop: ClipCrop = "squash", placement: PartPlacement | None = None) -> EncodedReference:
    """`image [3, H, W]` in 0..1 -> the character's features for output frames of `size = (H, W)`.

    The image is resized to the output size (as Moore-AnimateAnyone does), so its tokens line up
    with the denoised frames' at every attention resolution. `clip_crop` chooses how CLIP sees it
    (`aa2.models.image_encoder`): the whole image squashed, as Moore samples, or centre-cropped.
    `placement` moves the three parts it runs onto the device in turn (`aa2.pipeline.offload`); the
    features stay there.
    """
    if image.ndim != 3 or image.shape[0] != 3:
        raise AA2InputError(f"the reference image must be [3, H, W] RGB, got {tuple(image.shape)}")
    height, width = size
    if height % 64 or width % 64:
        raise AA2InputError(
            f"output size {size_text(height, width)} must be a multiple of 64 (the UNet halves the latent three "
            f"times); try {size_text(max(64, round(height / 64) * 64), max(64, round(width / 64) * 64))}"
        )
    resized = reference_pixels(image, (height, width))[None]
    placement = placement or PartPlacement(model)
    placement.prepare("reference latents")
    latents = encode_frames(model.vae, resized)[:, :, 0]
    placement.prepare("reference context")
    context = reference_context(model.image_encoder, image[None], clip_crop)
    placement.prepare("reference features")
    param = next(model.reference_net.parameters())
    bank = model.encode_reference(latents.to(param.device, param.dtype), context.to(param.device, param.dtype))
    return EncodedReference(bank, context, torch.zeros_like(context), latents, (height, width), model.config.fusion)
