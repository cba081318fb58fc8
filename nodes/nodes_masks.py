"""ShapeAgnosticMask (paper §3.2, eq. 2) and a preview that tints a mask over the frames."""

from __future__ import annotations

import torch

from ..aa2.conditioning.masks import environment_frames, shape_agnostic_mask
from ..aa2.errors import AA2InputError, size_text
from . import host
from .boundary import frames_to_image, frames_to_mask, image_to_frames, mask_to_frames, match_frames

CATEGORY = "AnimateAnyone2/masks"
MAX_BLOCKS = 4096
TINTS = {"red": (1.0, 0.1, 0.1), "green": (0.1, 0.9, 0.2), "blue": (0.15, 0.35, 1.0),
         "yellow": (1.0, 0.9, 0.1), "magenta": (1.0, 0.2, 0.9)}


class ShapeAgnosticMask:
    DESCRIPTION = (
        "Coarsens the character mask into blocks (Animate Anyone 2, §3.2): the box around the character is "
        "split into blocks_h × blocks_w blocks and a block is masked if any of it is character, so the "
        "environment no longer outlines the character's silhouette. Also cuts that region out of the "
        "driving frames, giving the environment input."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MASK", "IMAGE")
    RETURN_NAMES = ("agnostic_mask", "environment")
    OUTPUT_TOOLTIPS = (
        "The block mask; it always covers the input mask.",
        "The driving frames with the block mask filled grey (without driving frames: the mask, grey on black).",
    )
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        blocks = {"default": 0, "min": 0, "max": MAX_BLOCKS, "step": 1}
        return {
            "required": {
                "mask": ("MASK", {"tooltip": "Character mask per frame (from a SAM / segmentation node)."}),
                "blocks_h": ("INT", {**blocks, "tooltip": "Number of blocks down the character's box "
                             "(kh). 0 = the paper's setting, box height / 10 (blocks of about 10 px)."}),
                "blocks_w": ("INT", {**blocks, "tooltip": "Number of blocks across the box (kw). "
                             "0 = box width / 10. Higher follows the silhouette more closely."}),
                "box": (["per_frame", "clip"], {"default": "per_frame", "tooltip": "per_frame: each "
                        "frame's own box; clip: one box over all frames, so the block grid stands still."}),
                "dilate": ("INT", {"default": 0, "min": 0, "max": 256, "step": 1, "tooltip": "Grow the "
                           "mask by this many pixels first (for ragged segmentations)."}),
                "empty_frames": (["keep", "previous", "error"], {"default": "keep", "tooltip": "Frames "
                                 "where the character is missing: keep them empty, copy the nearest "
                                 "frame's mask, or stop with an error."}),
            },
            "optional": {
                "driving_frames": ("IMAGE", {"tooltip": "The driving video; connects the environment output."}),
                "fill": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip":
                         "Grey level put where the mask is (0.5 = the VAE's zero, as the model was trained)."}),
            },
        }

    def make(self, mask, blocks_h, blocks_w, box, dilate, empty_frames, driving_frames=None, fill=0.5):
        masks = mask_to_frames(mask, "mask")
        agnostic = shape_agnostic_mask(masks, blocks_h or None, blocks_w or None, box=box,
                                       dilate=dilate, empty=empty_frames)
        if driving_frames is None:
            frames = torch.zeros(agnostic.shape[0], 3, *agnostic.shape[1:])
        else:
            frames = image_to_frames(driving_frames, "driving_frames")
            agnostic = match_frames(agnostic, frames.shape[0], "mask")
        environment = environment_frames(frames, agnostic.to(frames.device), fill)
        out = host.intermediate_device()
        return frames_to_mask(agnostic, out), frames_to_image(environment, out)


class AA2MaskPreview:
    DESCRIPTION = "Shows a mask over its frames, tinted, to check a segmentation or a shape-agnostic mask."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("overlay",)
    OUTPUT_TOOLTIPS = ("The frames with the mask tinted; connect to Preview Image or a video combiner.",)
    FUNCTION = "overlay"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE", {"tooltip": "Frames to draw on."}),
            "mask": ("MASK", {"tooltip": "One mask per frame, or one mask for every frame."}),
            "color": (list(TINTS), {"default": "red", "tooltip": "Tint colour."}),
            "opacity": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.05,
                                  "tooltip": "How strongly the mask is tinted (0 = not at all)."}),
        }}

    def overlay(self, images, mask, color, opacity):
        if color not in TINTS:
            raise AA2InputError(f"color must be one of {', '.join(TINTS)}; got {color!r}.")
        if not 0.0 <= opacity <= 1.0:  # also NaN, which the host's range check lets through
            raise AA2InputError(f"opacity must be between 0 and 1; got {opacity}.")
        frames = image_to_frames(images, "images")
        masks = match_frames(mask_to_frames(mask), frames.shape[0])
        if frames.shape[0] == 1 and masks.shape[0] > 1:
            frames = frames.expand(masks.shape[0], -1, -1, -1)
        if masks.shape[1:] != frames.shape[2:]:
            raise AA2InputError(
                f"The mask is {size_text(*masks.shape[1:])} but the images are "
                f"{size_text(*frames.shape[2:])}: resize one to the other first."
            )
        weight = (opacity * masks.clamp(0, 1).to(frames.device))[:, None]  # [F, 1, H, W]
        tint = torch.tensor(TINTS[color], device=frames.device)[None, :, None, None]
        return (frames_to_image(frames * (1 - weight) + tint * weight, host.intermediate_device()),)


NODE_CLASS_MAPPINGS = {"ShapeAgnosticMask": ShapeAgnosticMask, "AA2MaskPreview": AA2MaskPreview}
NODE_DISPLAY_NAME_MAPPINGS = {
    "ShapeAgnosticMask": "AA2 Shape-Agnostic Mask",
    "AA2MaskPreview": "AA2 Mask Overlay Preview",
}
